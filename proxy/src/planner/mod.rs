//! Planning: from statement text and a topology snapshot to a [`Plan`]. Pure: no I/O,
//! no session mutation, so plans can be cached and tested with golden files.
//!
//! Session statements (USE, SET, BEGIN, SHOW DATABASES...) are recognised from their
//! leading words; everything else is parsed with sqlparser's MySQL dialect, its tables
//! resolved to keyspaces, and routed.

pub mod analysis;
pub mod clauses;
pub mod colocation;
pub mod ddl;
pub mod edit;
pub mod facts;
pub mod gather;
pub mod insert;
pub mod insert_select;
pub mod lexer;
pub mod merge;
pub mod move_rows;
pub mod plan;
pub mod prepared_sql;
pub mod privilege;
pub mod rules;
pub mod select;
pub mod set;
pub mod sharded;
pub mod sqltext;
pub mod tables;
pub mod values;

use crate::error::ProxyError;
use edit::{Edits, TextIndex};
pub use plan::{
    Facts, Plan, Primitive, Query, QueryPlan, Route, SavepointAction, SessionOp, Target,
};
use shardgate_topology::{Keyspace, Snapshot};
use sqlparser::ast::{visit_expressions, Expr, Spanned, Statement};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;
use sqltext::leading_words;
use std::ops::ControlFlow;
use std::sync::Arc;

/// What the planner may look at besides the statement.
#[derive(Clone, Copy)]
pub struct PlanContext<'a> {
    pub snapshot: &'a Snapshot,
    /// The tables' columns and keys, as schema tracking last read them.
    pub schema: &'a crate::schema::Schemas,
    /// The session's current keyspace.
    pub keyspace: Option<&'a str>,
    /// The shard the session targets with `USE ks:shard`.
    pub shard: Option<&'a str>,
}

/// Plans one statement (multi-statement text is split before planning). The text is the
/// normalized view (`lexer::normalize`) of what the client sent.
pub fn plan(sql: &str, ctx: &PlanContext) -> Result<Plan, ProxyError> {
    if let Some(name) = lexer::reserved_name(sql) {
        return Err(ProxyError::Reserved(name));
    }
    let words = leading_words(sql, 4);
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    match w(0) {
        "USE" => plan_use(sql, ctx),
        "BEGIN" if w(1).is_empty() || w(1) == "WORK" => {
            Ok(Plan::Session(SessionOp::Begin { read_only: false }))
        }
        "START" if w(1) == "TRANSACTION" => {
            let upper = sql.to_ascii_uppercase();
            Ok(Plan::Session(SessionOp::Begin {
                read_only: upper.contains("READ ONLY"),
            }))
        }
        "COMMIT" => Ok(Plan::Session(SessionOp::Commit)),
        "ROLLBACK" if w(1) != "TO" && w(2) != "TO" => Ok(Plan::Session(SessionOp::Rollback)),
        "ROLLBACK" => savepoint(sql, SavepointAction::RollbackTo),
        "SAVEPOINT" => savepoint(sql, SavepointAction::Set),
        "RELEASE" if w(1) == "SAVEPOINT" => savepoint(sql, SavepointAction::Release),
        "SELECT" if set::autocommit_query(sql).is_some() => {
            Ok(Plan::Session(SessionOp::SelectAutocommit {
                column: set::autocommit_query(sql).unwrap_or_default(),
            }))
        }
        "SET" => set::parse_set(sql)
            .map(|a| Plan::Session(SessionOp::Set(a)))
            .map_err(ProxyError::Syntax),
        "SHOW" => match w(1) {
            "DATABASES" | "SCHEMAS" => Ok(Plan::Session(SessionOp::ShowDatabases)),
            "KEYSPACES" | "VITESS_KEYSPACES" => Ok(Plan::Session(SessionOp::ShowKeyspaces)),
            "SHARDS" | "VITESS_SHARDS" => Ok(Plan::Session(SessionOp::ShowShards)),
            "WARNINGS" | "ERRORS" => Ok(Plan::Session(SessionOp::ShowWarnings)),
            "COUNT" if matches!(w(2), "WARNINGS" | "ERRORS") => {
                Ok(Plan::Session(SessionOp::ShowWarnings))
            }
            "PROCESSLIST" => Ok(Plan::Session(SessionOp::ShowProcesslist { full: false })),
            "STATUS" | "SESSION" | "GLOBAL" | "LOCAL" if ssl_status_pattern(sql).is_some() => {
                Ok(Plan::Session(SessionOp::ShowSslStatus {
                    pattern: ssl_status_pattern(sql).unwrap_or_default(),
                }))
            }
            "QUERY" if w(2) == "STATS" => Ok(Plan::Session(SessionOp::ShowQueryStats)),
            "LAST" if w(2) == "QUERY" && w(3) == "TRACE" => {
                Ok(Plan::Session(SessionOp::ShowLastTrace))
            }
            "FULL" if w(2) == "PROCESSLIST" => {
                Ok(Plan::Session(SessionOp::ShowProcesslist { full: true }))
            }
            _ => plan_statement(sql, ctx),
        },
        "KILL" => {
            let query_only = w(1) == "QUERY";
            let id_word = if matches!(w(1), "QUERY" | "CONNECTION") {
                w(2)
            } else {
                w(1)
            };
            let id = id_word.parse().map_err(|_| {
                ProxyError::Syntax(format!("KILL needs a connection id, not {id_word:?}"))
            })?;
            Ok(Plan::Session(SessionOp::Kill { id, query_only }))
        }
        "PREPARE" => prepared_sql::plan_prepare(sql),
        "EXECUTE" if w(1) == "IMMEDIATE" => Err(ProxyError::NotSupported(
            "EXECUTE IMMEDIATE (its text is only known when it runs, so the proxy can neither route nor check it); use PREPARE ... FROM and EXECUTE".into(),
        )),
        "EXECUTE" => prepared_sql::plan_execute(sql),
        "DEALLOCATE" | "DROP" if w(1) == "PREPARE" => Ok(Plan::Session(SessionOp::SqlDeallocate {
            name: w(2).to_ascii_lowercase(),
        })),
        "EXPLAIN" if w(1) == "ANALYZE" && w(2) == "FORMAT" && w(3) == "SHARDGATE" => {
            let upper = sql.to_ascii_uppercase();
            let at = upper.find("SHARDGATE").unwrap_or(0) + "SHARDGATE".len();
            let inner = sql.get(at..).unwrap_or("").trim();
            if inner.is_empty() || leading_words(inner, 1).first().map(String::as_str) == Some("EXPLAIN") {
                return Err(ProxyError::Syntax(
                    "EXPLAIN ANALYZE FORMAT=shardgate analyzes one statement".into(),
                ));
            }
            // Planned (and checked) when it runs, like any statement.
            plan(inner, ctx)?;
            Ok(Plan::Session(SessionOp::ExplainAnalyze {
                statement: inner.to_string(),
            }))
        }
        "EXPLAIN" if w(1) == "FORMAT" && w(2) == "SHARDGATE" => {
            let upper = sql.to_ascii_uppercase();
            let at = upper.find("SHARDGATE").unwrap_or(0) + "SHARDGATE".len();
            let inner = sql.get(at..).unwrap_or("").trim();
            // One level only: the inner statement is planned, never explained again (a
            // tower of EXPLAINs would otherwise recurse as deep as the client likes).
            if leading_words(inner, 1).first().map(String::as_str) == Some("EXPLAIN") {
                return Err(ProxyError::Syntax(
                    "EXPLAIN FORMAT=shardgate explains one statement, not another EXPLAIN".into(),
                ));
            }
            Ok(Plan::Session(SessionOp::Explain(Box::new(plan(
                inner, ctx,
            )?))))
        }
        _ => plan_statement(sql, ctx),
    }
}

/// The pattern of `SHOW [SESSION | GLOBAL | LOCAL] STATUS LIKE 'ssl...'`, when `sql` is
/// that statement with a pattern starting with `ssl` (any case).
fn ssl_status_pattern(sql: &str) -> Option<String> {
    let words = leading_words(sql, 5);
    let at = match words.get(1).map(String::as_str) {
        Some("STATUS") => 2,
        Some("SESSION" | "GLOBAL" | "LOCAL")
            if words.get(2).map(String::as_str) == Some("STATUS") =>
        {
            3
        }
        _ => return None,
    };
    if words.get(at).map(String::as_str) != Some("LIKE") {
        return None;
    }
    let code = sqltext::strip_comments(sql);
    let upper = code.to_ascii_uppercase();
    let rest = code.get(upper.find(" LIKE")? + 5..)?.trim();
    let quote = rest.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let body = rest.get(1..)?;
    let end = body.find(quote)?;
    let pattern = body.get(..end)?;
    if !body
        .get(end + 1..)?
        .trim()
        .trim_end_matches(';')
        .trim()
        .is_empty()
    {
        return None;
    }
    pattern
        .get(..3)
        .filter(|p| p.eq_ignore_ascii_case("ssl"))
        .map(|_| pattern.to_string())
}

/// SAVEPOINT name, ROLLBACK [WORK] TO [SAVEPOINT] name, RELEASE SAVEPOINT name.
fn savepoint(sql: &str, action: SavepointAction) -> Result<Plan, ProxyError> {
    let code = sqltext::strip_comments(sql);
    let name = code
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .last()
        .unwrap_or("")
        .trim_matches('`');
    if name.is_empty() || name.eq_ignore_ascii_case("SAVEPOINT") || name.eq_ignore_ascii_case("TO")
    {
        return Err(ProxyError::Syntax("a savepoint needs a name".into()));
    }
    Ok(Plan::Session(SessionOp::Savepoint {
        name: name.to_string(),
        action,
    }))
}

fn plan_use(sql: &str, ctx: &PlanContext) -> Result<Plan, ProxyError> {
    let code = sqltext::strip_comments(sql);
    let arg = code
        .trim()
        .get(3..)
        .unwrap_or("")
        .trim()
        .trim_end_matches(';')
        .trim()
        .trim_matches('`');
    use_target(arg, ctx.snapshot)
        .map(|(keyspace, shard)| Plan::Session(SessionOp::Use { keyspace, shard }))
}

/// Resolves a database name as clients give it (`ks`, `ks:shard`, `ks/shard`).
pub fn use_target(arg: &str, snapshot: &Snapshot) -> Result<(String, Option<String>), ProxyError> {
    let (ks, shard) = match arg.split_once([':', '/']) {
        Some((k, s)) => (k, Some(s.to_string())),
        None => (arg, None),
    };
    let Some(keyspace) = snapshot.keyspace(ks) else {
        return Err(ProxyError::UnknownDatabase(arg.to_string()));
    };
    if let Some(s) = &shard {
        if !keyspace.shards.contains_key(s) {
            return Err(ProxyError::UnknownDatabase(arg.to_string()));
        }
    }
    Ok((ks.to_string(), shard))
}

/// Parses and routes a data or DDL statement.
fn plan_statement(sql: &str, ctx: &PlanContext) -> Result<Plan, ProxyError> {
    let depth = lexer::nesting_depth(sql);
    if depth > lexer::MAX_NESTING {
        // Walking (and even dropping) a tree this deep would exhaust the stack.
        return plan_unparsed(
            sql,
            ctx,
            &format!(
                "it nests more than {} levels of operators or parentheses",
                lexer::MAX_NESTING
            ),
        );
    }
    if depth > SHALLOW {
        // Parsing, walking and dropping a deep tree recurse once per level: do it on a
        // stack sized for the deepest statement the guard lets through.
        return stacker::grow(DEEP_STACK, || plan_parsed(sql, ctx));
    }
    plan_parsed(sql, ctx)
}

/// Statements nested less deeply than this plan on the caller's stack.
const SHALLOW: usize = 100;
/// The stack planning gets for deeper statements (up to `lexer::MAX_NESTING`).
const DEEP_STACK: usize = 128 << 20;

fn plan_parsed(sql: &str, ctx: &PlanContext) -> Result<Plan, ProxyError> {
    let parsed = Parser::parse_sql(&MySqlDialect {}, sql);
    let stmt = match parsed {
        Ok(mut v) if v.len() == 1 => v.pop().expect("one statement"),
        Ok(_) => return Err(ProxyError::Syntax("expected exactly one statement".into())),
        Err(e) => return plan_unparsed(sql, ctx, &e.to_string()),
    };
    if let Some(r) = rules::apply(sql, &stmt, ctx)? {
        let named = named_keyspaces(&stmt, ctx);
        let mut plan = plan_rerouted(r, ctx)?;
        if let Plan::Query(q) = &mut plan {
            q.grant_keyspaces = named;
        }
        return Ok(plan);
    }
    let root = route_statement(sql, &stmt, ctx)?;
    let mut plan = QueryPlan::new(root, facts::of(sql, Some(&stmt)));
    let named = tables::tables(&stmt);
    if !named.is_empty()
        && named
            .iter()
            .all(|t| t.schema.as_deref().is_some_and(tables::is_system_schema))
    {
        // Only system schemas (information_schema; the others need the admin role): no
        // keyspace's data is read.
        plan.grant_keyspaces = Arc::from([]);
    }
    Ok(Plan::Query(plan))
}

/// The keyspaces of the tables `stmt` names, as the client names them (a qualifier, or
/// the session's keyspace; system schemas left out).
fn named_keyspaces(stmt: &Statement, ctx: &PlanContext) -> Arc<[Arc<str>]> {
    let mut out: Vec<Arc<str>> = Vec::new();
    for t in tables::tables(stmt) {
        if let Ok(Some(ks)) = t.keyspace(ctx.keyspace) {
            if !out.iter().any(|k| &**k == ks) {
                out.push(Arc::from(ks));
            }
        }
    }
    out.into()
}

/// Plans a statement that routing rules rewrote (see `rules.rs`).
fn plan_rerouted(r: rules::Rerouted, ctx: &PlanContext) -> Result<Plan, ProxyError> {
    let stmt = match Parser::parse_sql(&MySqlDialect {}, &r.sql) {
        Ok(mut v) if v.len() == 1 => v.pop().expect("one statement"),
        _ => return Err(ProxyError::NotSupported(
            "a statement naming a table that a routing rule moved, which the proxy cannot rewrite"
                .into(),
        )),
    };
    let ctx = PlanContext {
        keyspace: r.keyspace.as_deref().or(ctx.keyspace),
        ..*ctx
    };
    let root = route_statement(&r.sql, &stmt, &ctx)?;
    let mut plan = QueryPlan::new(root, facts::of(&r.sql, Some(&stmt)));
    plan.rerouted = Some(Arc::from(r.sql.as_str()));
    Ok(Plan::Query(plan))
}

/// The primitive of a parsed statement.
pub(super) fn route_statement(
    sql: &str,
    stmt: &Statement,
    ctx: &PlanContext,
) -> Result<Primitive, ProxyError> {
    if let Some(shard) = ctx.shard {
        let ks = ctx.keyspace.unwrap_or_default();
        return Ok(route(ks, Target::Shard(shard.to_string()), sql, stmt, ctx));
    }
    if let Some(p) = insert_select(sql, stmt, ctx)? {
        return Ok(p);
    }
    let refs = tables::tables(stmt);
    let mut keyspaces: Vec<&str> = Vec::new();
    for t in &refs {
        if let Some(ks) = t.keyspace(ctx.keyspace)? {
            if !keyspaces.contains(&ks) {
                keyspaces.push(ks);
            }
        }
    }
    let keyspace = match keyspaces.as_slice() {
        [] => default_keyspace(ctx)?,
        [one] => ctx.snapshot.keyspace(one).ok_or_else(|| {
            let t = refs
                .iter()
                .find(|t| t.keyspace(ctx.keyspace).ok().flatten() == Some(one))
                .map(|t| t.name.clone())
                .unwrap_or_default();
            if ctx.keyspace == Some(one) {
                ProxyError::UnknownDatabase(one.to_string())
            } else {
                ProxyError::UnknownTable {
                    keyspace: one.to_string(),
                    table: t,
                }
            }
        })?,
        many => {
            let refused = ProxyError::NotSupported(format!(
                "a statement spanning keyspaces {}",
                many.join(", ")
            ));
            return gather_instead(sql, stmt, ctx, refused);
        }
    };
    if !keyspace.sharded {
        if let (Some(w), true) = (&keyspace.routing.workflow, facts::is_ddl(stmt)) {
            // Tables are moving out (MoveTables): their change capture must keep up.
            return Err(ProxyError::Resharding {
                keyspace: keyspace.name.clone(),
                workflow: w.clone(),
                what: "DDL".into(),
            });
        }
        return Ok(route(&keyspace.name, Target::Unsharded, sql, stmt, ctx));
    }
    if matches!(stmt, Statement::LockTables { .. } | Statement::UnlockTables) {
        // Table locks (every dump restore takes them) on every shard; the connections stay
        // with the session until UNLOCK TABLES (see the plan's facts).
        return ddl::plan_ddl_text(sql, keyspace);
    }
    if keyspaces.is_empty() {
        return Ok(route(&keyspace.name, Target::AnyShard, sql, stmt, ctx));
    }
    if session_rewrites(sql, stmt, &keyspace.name, ctx, false).is_some() {
        let refused = ProxyError::NotSupported(
            "DATABASE(), @@socket or keyspace-qualified names in a statement on a sharded keyspace whose shards use other database names".into(),
        );
        return gather_instead(sql, stmt, ctx, refused);
    }
    let schema = ctx.schema.keyspaces.get(&keyspace.name).map(|k| &**k);
    match sharded::plan(sql, stmt, keyspace, ctx.snapshot, schema) {
        Err(refused @ ProxyError::NotSupported(_)) => gather_instead(sql, stmt, ctx, refused),
        Ok(p) if same_shard_only(&p) => {
            // Pinned to values that may land on different shards: then gather.
            let refused = ProxyError::NotSupported(String::new());
            match gather_instead(sql, stmt, ctx, refused) {
                Ok(otherwise) => Ok(Primitive::Fallback {
                    first: Box::new(p),
                    otherwise: Box::new(otherwise),
                }),
                Err(_) => Ok(p),
            }
        }
        other => other,
    }
}

/// Whether the plan runs on one shard only if its pinned values agree.
fn same_shard_only(p: &Primitive) -> bool {
    let target = match p {
        Primitive::Route(r) => &r.target,
        Primitive::Write(w) => &w.route.target,
        _ => return false,
    };
    matches!(target, Target::SameShard { .. })
}

/// A SELECT the shards cannot answer alone is gathered (`gather/`), an UPDATE or DELETE
/// finds its rows that way and changes them by primary key; when that is not
/// possible either, the first refusal stands (it names the construct).
fn gather_instead(
    sql: &str,
    stmt: &Statement,
    ctx: &PlanContext,
    refused: ProxyError,
) -> Result<Primitive, ProxyError> {
    let gathered = match stmt {
        Statement::Query(_) => gather::plan(sql, stmt, ctx),
        Statement::Update(_) | Statement::Delete(_) => gather::write::plan(sql, stmt, ctx),
        _ => return Err(refused),
    };
    match gathered {
        Err(ProxyError::NotSupported(_)) => Err(refused),
        other => other,
    }
}

/// The statement as a scratch connection runs it: keyspace qualifiers become the
/// scratch's database, session functions and `DATABASE()` the session's values.
pub(crate) fn scratch_text(sql: &str, stmt: &Statement, ctx: &PlanContext) -> String {
    session_rewrites(sql, stmt, "", ctx, true).unwrap_or_else(|| sql.to_string())
}

/// INSERT ... SELECT into a sharded table, or from another keyspace: planned on its own
/// (`insert_select.rs`). None for anything else (an unsharded keyspace inserting from
/// itself is an ordinary statement).
fn insert_select(
    sql: &str,
    stmt: &Statement,
    ctx: &PlanContext,
) -> Result<Option<Primitive>, ProxyError> {
    let Statement::Insert(ins) = stmt else {
        return Ok(None);
    };
    let from_query = ins
        .source
        .as_ref()
        .is_some_and(|q| !matches!(&*q.body, sqlparser::ast::SetExpr::Values(_)));
    if !from_query {
        return Ok(None);
    }
    let name = ins.table.to_string();
    let parts: Vec<&str> = name.split('.').map(|p| p.trim_matches('`')).collect();
    let (ks_name, table) = match parts.as_slice() {
        [t] => (ctx.keyspace.ok_or(ProxyError::NoDatabaseSelected)?, *t),
        [k, t] => (*k, *t),
        _ => return Ok(None),
    };
    let Some(ks) = ctx.snapshot.keyspace(ks_name) else {
        return Err(ProxyError::UnknownDatabase(ks_name.to_string()));
    };
    let sources_elsewhere = tables::tables(stmt).iter().any(|t| {
        t.keyspace(ctx.keyspace)
            .ok()
            .flatten()
            .is_some_and(|k| k != ks_name)
    });
    if !ks.sharded && !sources_elsewhere {
        return Ok(None);
    }
    insert_select::plan(sql, ins, ks, table, ctx).map(Some)
}

/// A statement sqlparser cannot read: passed through where no routing decision depends on
/// it (unsharded keyspace, a targeted shard), refused elsewhere. Since the proxy cannot
/// tell what it changes, its connection stays with the session (no state can leak to
/// another session) and it counts as a write.
fn plan_unparsed(sql: &str, ctx: &PlanContext, err: &str) -> Result<Plan, ProxyError> {
    let query = Query::verbatim(sql);
    let unknown = |root: Primitive| Plan::Query(QueryPlan::new(root, facts::of(sql, None)));
    if let Some(shard) = ctx.shard {
        return Ok(unknown(Primitive::Route(Route {
            keyspace: ctx.keyspace.unwrap_or_default().to_string(),
            target: Target::Shard(shard.to_string()),
            query,
        })));
    }
    let ks = default_keyspace(ctx)?;
    if rules::may_name_moved_table(sql, &ks.name, ctx) {
        return Err(ProxyError::NotSupported(format!(
            "a statement shardgate cannot parse that may name a table a routing rule moved ({err})"
        )));
    }
    if let Some(w) = &ks.routing.workflow {
        let first = leading_words(sql, 1);
        if first.first().is_some_and(|w| {
            matches!(
                w.as_str(),
                "ALTER" | "CREATE" | "DROP" | "RENAME" | "TRUNCATE"
            )
        }) {
            return Err(ProxyError::Resharding {
                keyspace: ks.name.clone(),
                workflow: w.clone(),
                what: "DDL".into(),
            });
        }
    }
    if !ks.sharded {
        return Ok(unknown(Primitive::Route(Route {
            keyspace: ks.name.clone(),
            target: Target::Unsharded,
            query,
        })));
    }
    if let Some(table) = ddl::keys_toggle(sql) {
        // `/*!40000 ALTER TABLE t DISABLE KEYS */` in every dump: harmless on each shard.
        if ks.table(&table).is_none() {
            return Err(ProxyError::UnknownTable {
                keyspace: ks.name.clone(),
                table,
            });
        }
        let root = ddl::plan_ddl_text(sql, ks)?;
        return Ok(Plan::Query(QueryPlan::new(root, facts::of(sql, None))));
    }
    Err(ProxyError::NotSupported(format!(
        "a statement shardgate cannot parse on sharded keyspace {} ({err})",
        ks.name
    )))
}

/// The keyspace for statements that name no table: the session's, else the first
/// unsharded keyspace, else the first keyspace.
fn default_keyspace<'a>(ctx: &PlanContext<'a>) -> Result<&'a Arc<Keyspace>, ProxyError> {
    if let Some(k) = ctx.keyspace {
        return ctx
            .snapshot
            .keyspace(k)
            .ok_or_else(|| ProxyError::UnknownDatabase(k.to_string()));
    }
    ctx.snapshot
        .keyspaces
        .values()
        .find(|k| !k.sharded && !k.serving.is_empty())
        .or_else(|| {
            ctx.snapshot
                .keyspaces
                .values()
                .find(|k| !k.serving.is_empty())
        })
        .ok_or_else(|| ProxyError::NoServingShards("(no keyspace has serving shards)".into()))
}

fn route(
    keyspace: &str,
    target: Target,
    sql: &str,
    stmt: &Statement,
    ctx: &PlanContext,
) -> Primitive {
    let query = match session_rewrites(sql, stmt, keyspace, ctx, false) {
        Some(text) => Query::rewritten(&text),
        None => Query::verbatim(sql),
    };
    Primitive::Route(Route {
        keyspace: keyspace.to_string(),
        target,
        query,
    })
}

/// The render marker for a function whose value the session keeps.
fn session_function(name: &str) -> Option<&'static str> {
    match name.to_ascii_lowercase().as_str() {
        "last_insert_id" => Some("lastid"),
        "row_count" => Some("rowcount"),
        "found_rows" => Some("foundrows"),
        _ => None,
    }
}

/// Rewrites that make a backend answer as the proxy would: `DATABASE()` is the session's
/// keyspace (not the backend's database name), `@@socket` is NULL (drivers would otherwise
/// reconnect straight to the backend's socket), and keyspace qualifiers become the shard's
/// database name. `None` when nothing needs changing.
fn session_rewrites(
    sql: &str,
    stmt: &Statement,
    keyspace: &str,
    ctx: &PlanContext,
    all_qualifiers: bool,
) -> Option<String> {
    let idx = TextIndex::new(sql);
    let mut edits = Edits::new();
    // Rewritten select items keep the column name the client expects (`DATABASE()`).
    let unaliased: Vec<(usize, usize)> = match stmt {
        Statement::Query(q) => match &*q.body {
            sqlparser::ast::SetExpr::Select(sel) => sel
                .projection
                .iter()
                .filter_map(|i| match i {
                    sqlparser::ast::SelectItem::UnnamedExpr(e) => idx.expr_range(e.span()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    let named = |a: usize, b: usize, text: String| -> String {
        if unaliased.contains(&(a, b)) {
            format!("{text} AS `{}`", sql[a..b].replace('`', "``"))
        } else {
            text
        }
    };
    let ks = ctx.snapshot.keyspace(keyspace);
    let db_differs = all_qualifiers
        || ks
            .map(|k| k.shards.values().any(|s| s.database != k.name))
            .unwrap_or(false);
    let _ = visit_expressions(stmt, |e: &Expr| {
        match e {
            Expr::Identifier(id) if id.quote_style.is_none() => {
                let v = id.value.to_ascii_lowercase();
                if v == "@@socket" || v == "@@global.socket" || v == "@@session.socket" {
                    if let Some((a, b)) = idx.range(id.span) {
                        edits.replace(a, b, named(a, b, "NULL".into()));
                    }
                }
            }
            Expr::CompoundIdentifier(parts)
                if parts.len() == 2
                    && parts[0].value.eq_ignore_ascii_case("@@global")
                    && parts[1].value.eq_ignore_ascii_case("socket") =>
            {
                if let Some((a, b)) = idx.range(e.span()) {
                    edits.replace(a, b, "NULL");
                }
            }
            Expr::Function(f)
                if matches!(&f.args, sqlparser::ast::FunctionArguments::List(l) if l.args.is_empty())
                    && session_function(&f.name.to_string()).is_some() =>
            {
                // The session's values: with multiplexing the previous statement may have
                // run on another connection (or shard), and ids may come from sequences.
                let marker = session_function(&f.name.to_string()).unwrap_or("lastid");
                if let Some((a, b)) = idx.call_range(f.name.span()) {
                    edits.replace(
                        a,
                        b,
                        named(a, b, format!("{}{marker}", sqltext::MARKER_PREFIX)),
                    );
                }
            }
            Expr::Function(f) => {
                let name = f.name.to_string().to_ascii_lowercase();
                if (name == "database" || name == "schema")
                    && (ctx.keyspace.is_none() || db_differs)
                {
                    if let Some((a, b)) = idx.call_range(f.name.span()) {
                        let lit = match ctx.keyspace {
                            Some(k) => format!("'{}'", k.replace('\'', "''")),
                            None => "NULL".to_string(),
                        };
                        edits.replace(a, b, named(a, b, lit));
                    }
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    if db_differs {
        for t in tables::tables(stmt) {
            if let (Some(s), Some(span)) = (&t.schema, t.schema_span) {
                if s == keyspace || (all_qualifiers && !tables::is_system_schema(s)) {
                    if let Some((a, b)) = idx.range(span) {
                        edits.replace(a, b, format!("{}db", sqltext::MARKER_PREFIX));
                    }
                }
            }
        }
    }
    if edits.is_empty() {
        return None;
    }
    edits.apply(sql)
}

#[cfg(test)]
pub(crate) mod golden;
#[cfg(test)]
mod tests;
