//! Plans: what executing a statement means, as a tree of enums whose variants carry
//! exactly the data they need. Plans are immutable, cached, and serializable (that is what
//! `EXPLAIN FORMAT=shardgate` prints and what the golden tests compare).

use super::sqltext::SqlTemplate;
use super::values::ValueExpr;
use serde::Serialize;
use std::sync::Arc;

/// The plan of one statement. (Plans live behind an `Arc` in the cache, so the size
/// difference between variants costs nothing.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    /// Answered by the session itself, perhaps with help from backends.
    Session(SessionOp),
    /// Runs against shards.
    Query(QueryPlan),
}

/// A plan that runs against shards, with what the session must know about it.
#[derive(Debug, Clone, Serialize)]
pub struct QueryPlan {
    #[serde(flatten)]
    pub root: Primitive,
    #[serde(skip_serializing_if = "Facts::is_plain")]
    pub facts: Facts,
    /// What metrics call it: the plan type and its first keyspace (found once).
    #[serde(skip)]
    pub kind: &'static str,
    #[serde(skip)]
    pub keyspace: Arc<str>,
    /// The statement's digest (literals replaced), set by the plan cache.
    #[serde(skip)]
    pub digest: Arc<str>,
    /// The statement as routing rules rewrote it (tables named in one keyspace that live
    /// in another, see `rules.rs`): what was planned, and what a backend prepares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerouted: Option<Arc<str>>,
    /// The keyspaces a user must be granted to run it (found once, see
    /// `session/grants.rs`): where it runs; none when it reads no table or only
    /// `information_schema`; for a rerouted statement the keyspaces the client named.
    #[serde(skip)]
    pub grant_keyspaces: Arc<[Arc<str>]>,
}

impl QueryPlan {
    pub fn new(root: Primitive, mut facts: Facts) -> QueryPlan {
        facts.atomic = match &root {
            Primitive::MoveRows(_) | Primitive::InsertSelect(_) | Primitive::GatherWrite(_) => true,
            Primitive::Fallback { otherwise, .. } => {
                matches!(**otherwise, Primitive::GatherWrite(_))
            }
            _ => false,
        };
        let kind = root.kind();
        let keyspaces: Arc<[Arc<str>]> = root.keyspaces().into_iter().map(Arc::from).collect();
        let keyspace: Arc<str> = keyspaces.first().cloned().unwrap_or_else(|| Arc::from(""));
        // A statement that reads no table (`SELECT @@version`) runs in some keyspace but
        // reads nothing of it.
        let keyspaces = if facts.no_tables {
            Arc::from([])
        } else {
            keyspaces
        };
        QueryPlan {
            root,
            facts,
            kind,
            keyspace,
            digest: Arc::from(""),
            rerouted: None,
            grant_keyspaces: keyspaces,
        }
    }
}

/// What running a statement means for the session, found once when it is planned (the
/// session never reads the SQL text again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    /// The connections it runs on carry state the proxy cannot move to another
    /// connection (temporary tables, named locks, LOCK TABLES, user variables assigned
    /// inside a query, or a statement the proxy cannot follow): keep them for the session.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pin: bool,
    /// UNLOCK TABLES: the locks are gone; pinned connections may go back.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unpin: bool,
    /// It may change rows (a resharding cutover holds it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub write: bool,
    /// `/*+ MAX_EXECUTION_TIME(ms) */`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// `SELECT SQL_CALC_FOUND_ROWS`: FOUND_ROWS() is summed over the shards afterwards.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub calc_found_rows: bool,
    /// DDL: once it succeeded, the keyspace's schema is read again (and the change
    /// announced to the other proxies).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ddl: bool,
    /// It changes several shards in steps that must stand or fall together (rows moving
    /// between shards, rows the proxy places for INSERT ... SELECT): outside a
    /// transaction the session opens one for it, committed before the answer.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub atomic: bool,
    /// It reads no table (`SELECT 1`, `SELECT @@x`): under autocommit=0 it opens no
    /// transaction (and so pins nothing).
    #[serde(skip)]
    pub no_tables: bool,
    /// A locking read (`FOR UPDATE`, `FOR SHARE`, `LOCK IN SHARE MODE`): under
    /// autocommit=0 it opens the implicit transaction, like a write.
    #[serde(skip)]
    pub locking: bool,
    /// It reads `@@autocommit`, which only the session knows (backends keep autocommit
    /// on); only `SELECT @@autocommit` alone is answered (by the session).
    #[serde(skip)]
    pub reads_autocommit: bool,
    /// The least role that may run it (see `privilege.rs`).
    #[serde(skip)]
    pub privilege: Privilege,
    /// sqlparser could not read it: the tables it names are unknown to the proxy (users
    /// limited to some keyspaces are checked on its words instead).
    #[serde(skip)]
    pub opaque: bool,
}

/// What a statement needs of the user's role, least first (`shardgate_config::Role`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Privilege {
    /// Reads (any role).
    #[default]
    Read,
    /// Changes rows (writer, admin).
    Write,
    /// Changes tables or the servers, or reads the system schemas (admin).
    Admin,
}

impl Facts {
    /// Nothing the session must do beyond running it (omitted from EXPLAIN output).
    pub fn is_plain(&self) -> bool {
        Facts {
            no_tables: false,
            locking: false,
            reads_autocommit: false,
            privilege: Privilege::Read,
            opaque: false,
            ..*self
        } == Facts::default()
    }
}

/// Statements about the session rather than the data.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionOp {
    /// `USE ks` or `USE ks:shard` (operators target one shard directly).
    Use {
        keyspace: String,
        shard: Option<String>,
    },
    /// `SHOW DATABASES`: the keyspaces.
    ShowDatabases,
    /// `SHOW KEYSPACES` / `SHOW VITESS_KEYSPACES`.
    ShowKeyspaces,
    /// `SHOW SHARDS` / `SHOW VITESS_SHARDS`.
    ShowShards,
    /// BEGIN / START TRANSACTION.
    Begin {
        read_only: bool,
    },
    Commit,
    Rollback,
    /// SET statements: applied to the session and to every backend connection it uses.
    Set(Vec<super::set::Assignment>),
    /// `EXPLAIN FORMAT=shardgate <stmt>`.
    Explain(Box<Plan>),
    /// SHOW WARNINGS / SHOW ERRORS / SHOW COUNT(*) WARNINGS: asked of the connection the
    /// previous statement ran on.
    ShowWarnings,
    /// `KILL [CONNECTION | QUERY] id` with the proxy's connection ids.
    Kill {
        id: u64,
        query_only: bool,
    },
    /// `SHOW [SESSION | GLOBAL] STATUS LIKE 'Ssl%'`: the client connection's TLS, which only
    /// the proxy knows (a backend would describe its own connection to the proxy).
    ShowSslStatus {
        /// The LIKE pattern (starts with `ssl`, any case).
        pattern: String,
    },
    /// `SHOW [FULL] PROCESSLIST`: the proxy's sessions.
    ShowProcesslist {
        full: bool,
    },
    /// `PREPARE name FROM 'text'` (or `FROM @var`).
    SqlPrepare {
        name: String,
        source: PrepareSource,
    },
    /// `EXECUTE name [USING @a, @b]`.
    SqlExecute {
        name: String,
        using: Vec<String>,
    },
    /// `DEALLOCATE | DROP PREPARE name`.
    SqlDeallocate {
        name: String,
    },
    /// `SELECT @@autocommit` (also `@@session.` / `@@local.`, with an alias): answered
    /// from the session, since autocommit is the proxy's (backends keep it on).
    SelectAutocommit {
        column: String,
    },
    /// `EXPLAIN ANALYZE FORMAT=shardgate <stmt>`: runs the statement (its result is not
    /// sent) and answers with its plan and trace: rows and time per shard.
    ExplainAnalyze {
        statement: String,
    },
    /// `SHOW QUERY STATS`: statistics per statement digest.
    ShowQueryStats,
    /// `SHOW LAST QUERY TRACE`: where the session's previous statement went (trace id,
    /// plan type, each shard with rows and milliseconds).
    ShowLastTrace,
    /// SAVEPOINT / ROLLBACK TO / RELEASE SAVEPOINT, on every shard of the transaction.
    Savepoint {
        name: String,
        action: SavepointAction,
    },
}

/// What a savepoint statement does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SavepointAction {
    Set,
    RollbackTo,
    Release,
}

/// Where an SQL-level PREPARE takes its statement text from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrepareSource {
    Text(String),
    Variable(String),
}

/// A node of an executable plan. Leaves are routes; the nodes above them merge what
/// several shards return into the one answer a single server would give.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Primitive {
    /// Sends a query to the shards `target` selects; their results are relayed one after
    /// the other without decoding rows.
    Route(Route),
    /// Merges shard streams each sorted by `keys` into one sorted stream.
    MergeSort {
        keys: Vec<SortKey>,
        input: Box<Primitive>,
    },
    /// Combines per-shard partial aggregates of consecutive rows with equal `group` keys
    /// (the input is sorted by them).
    Aggregate {
        group: Vec<SortKey>,
        aggregates: Vec<Aggregate>,
        input: Box<Primitive>,
    },
    /// Keeps rows for which `predicate` is true (HAVING across shards).
    Filter {
        predicate: Scalar,
        input: Box<Primitive>,
    },
    /// Sorts everything in memory (bounded by `session.max_merge_rows`).
    Sort {
        keys: Vec<SortKey>,
        input: Box<Primitive>,
    },
    /// Drops consecutive duplicate rows (input sorted on all compared columns).
    Distinct {
        keys: Vec<SortKey>,
        input: Box<Primitive>,
    },
    /// Skips `offset` rows, then returns at most `count`.
    Limit {
        count: ValueExpr,
        offset: Option<ValueExpr>,
        input: Box<Primitive>,
    },
    /// Removes the helper columns added for merging and restores column names.
    Project {
        hidden: usize,
        renames: Vec<Rename>,
        input: Box<Primitive>,
    },
    /// UNION ALL: each branch's rows in turn.
    Concat(Vec<Primitive>),
    /// INSERT into a sharded table: rows split by shard, ids from sequences.
    Insert(super::insert::InsertPlan),
    /// UPDATE / DELETE / DDL on several shards: one statement each, affected rows summed.
    Write(WritePlan),
    /// INSERT ... SELECT whose rows the proxy places: the SELECT's rows, inserted where
    /// they belong.
    InsertSelect(Box<super::insert_select::InsertSelectPlan>),
    /// UPDATE of the sharding column: the matched rows move to the new value's shard.
    MoveRows(Box<super::move_rows::MovePlan>),
    /// A statement the shards cannot answer alone: rows gathered on a scratch connection.
    Gather(Box<super::gather::GatherPlan>),
    /// UPDATE / DELETE whose rows a SELECT finds; each changed on its shard by key.
    GatherWrite(Box<super::gather::write::GatherWrite>),
    /// `first` (one shard's statement, `Target::SameShard`) when the bound values land on
    /// one shard, else `otherwise` (the statement gathered).
    Fallback {
        first: Box<Primitive>,
        otherwise: Box<Primitive>,
    },
}

impl Primitive {
    /// The plan type metrics and logs name it by: `route` (one shard), `scatter` (several
    /// shards, rows relayed), `merge` (several shards, merged by the proxy), `union`,
    /// `insert`, `write`, `insert_select`, `move`, `join` (gathered: joins and subqueries
    /// across shards), `join_write`, or `none`.
    pub fn kind(&self) -> &'static str {
        match self {
            Primitive::Route(r) => match r.target {
                Target::Scatter | Target::Lookup { .. } | Target::In { .. } => "scatter",
                Target::Nowhere => "none",
                _ => "route",
            },
            Primitive::MergeSort { input, .. }
            | Primitive::Aggregate { input, .. }
            | Primitive::Filter { input, .. }
            | Primitive::Sort { input, .. }
            | Primitive::Distinct { input, .. }
            | Primitive::Limit { input, .. }
            | Primitive::Project { input, .. } => match input.kind() {
                "route" => "route",
                "none" => "none",
                _ => "merge",
            },
            Primitive::Concat(_) => "union",
            Primitive::Insert(_) => "insert",
            Primitive::Write(_) => "write",
            Primitive::InsertSelect(_) => "insert_select",
            Primitive::MoveRows(_) => "move",
            Primitive::Gather(_) => "join",
            Primitive::GatherWrite(_) => "join_write",
            Primitive::Fallback { first, .. } => first.kind(),
        }
    }

    /// The keyspaces its routes go to, in the order they appear.
    pub fn keyspaces(&self) -> Vec<String> {
        fn walk(p: &Primitive, out: &mut Vec<String>) {
            let mut add = |k: &str| {
                if !out.iter().any(|x| x == k) {
                    out.push(k.to_string());
                }
            };
            match p {
                Primitive::Route(r) => add(&r.keyspace),
                Primitive::Insert(i) => add(&i.keyspace),
                Primitive::Write(w) => add(&w.route.keyspace),
                Primitive::MergeSort { input, .. }
                | Primitive::Aggregate { input, .. }
                | Primitive::Filter { input, .. }
                | Primitive::Sort { input, .. }
                | Primitive::Distinct { input, .. }
                | Primitive::Limit { input, .. }
                | Primitive::Project { input, .. } => walk(input, out),
                Primitive::Concat(parts) => parts.iter().for_each(|x| walk(x, out)),
                Primitive::InsertSelect(i) => {
                    add(&i.keyspace);
                    walk(&i.select, out);
                }
                Primitive::MoveRows(m) => add(&m.keyspace),
                Primitive::Gather(g) => {
                    add(&g.scratch);
                    g.fetches.iter().for_each(|f| add(&f.route.keyspace));
                }
                Primitive::GatherWrite(w) => {
                    w.targets.iter().for_each(|t| add(&t.keyspace));
                    walk(&w.select, out);
                }
                Primitive::Fallback { first, otherwise } => {
                    walk(first, out);
                    walk(otherwise, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self, &mut out);
        out
    }

    /// Marks every query as not the client's text (a part planned on its own, whose
    /// placeholders are markers): executes render it with literals.
    pub fn mark_rewritten(&mut self) {
        match self {
            Primitive::Route(r) => r.query.verbatim = false,
            Primitive::Write(w) => w.route.query.verbatim = false,
            Primitive::Insert(_)
            | Primitive::InsertSelect(_)
            | Primitive::MoveRows(_)
            | Primitive::Gather(_)
            | Primitive::GatherWrite(_) => {}
            Primitive::MergeSort { input, .. }
            | Primitive::Aggregate { input, .. }
            | Primitive::Filter { input, .. }
            | Primitive::Sort { input, .. }
            | Primitive::Distinct { input, .. }
            | Primitive::Limit { input, .. }
            | Primitive::Project { input, .. } => input.mark_rewritten(),
            Primitive::Concat(parts) => parts.iter_mut().for_each(Primitive::mark_rewritten),
            Primitive::Fallback { first, otherwise } => {
                first.mark_rewritten();
                otherwise.mark_rewritten();
            }
        }
    }
}

/// Which shards a route goes to.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The only shard of an unsharded keyspace.
    Unsharded,
    /// Any one serving shard (reference tables, statements without tables).
    AnyShard,
    /// A shard named by the session (`USE ks:-80`).
    Shard(String),
    /// Every serving shard.
    Scatter,
    /// The shard holding `value` under the keyspace's vindex `vindex`.
    Equal { vindex: String, value: ValueExpr },
    /// The shards holding the listed values. With `split`, each shard's query keeps only
    /// its own values (the list is the `:sg_in` marker of the query).
    In {
        vindex: String,
        values: Vec<ValueExpr>,
        split: bool,
    },
    /// The shard a lookup vindex's backing table maps `value` to (one query first).
    Lookup { vindex: String, value: ValueExpr },
    /// A keyspace id given directly (pinned tables).
    KeyspaceId(String),
    /// The one shard all these `(vindex, value)` pins map to: tables pinned to values by
    /// the WHERE clause (`w_id = ? AND s_w_id = ?`). Values that land on several shards
    /// make the statement fail with 1235 (it would need a cross-shard join).
    SameShard { pins: Vec<(String, ValueExpr)> },
    /// No row can match (a hash vindex on a value that is not an integer): no shard.
    Nowhere,
}

/// A query sent to shards.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    pub keyspace: String,
    pub target: Target,
    pub query: Query,
}

/// The text sent to a shard.
#[derive(Debug, Clone, Serialize)]
pub struct Query {
    /// The statement, cut at `?` placeholders and markers.
    pub template: Arc<SqlTemplate>,
    /// The statement text with `?` placeholders (what a backend prepares).
    #[serde(skip)]
    pub text: Arc<str>,
    /// True when the text is exactly the client's: a prepared statement can then run as a
    /// backend prepared statement and its binary rows relay as they are.
    pub verbatim: bool,
}

impl Query {
    pub fn verbatim(sql: &str) -> Query {
        Query {
            template: Arc::new(SqlTemplate::new(sql)),
            text: Arc::from(sql),
            verbatim: true,
        }
    }

    pub fn rewritten(sql: &str) -> Query {
        Query {
            template: Arc::new(SqlTemplate::new(sql)),
            text: Arc::from(sql),
            verbatim: false,
        }
    }
}

/// A column of the rows flowing between primitives: counted from the start, or from the
/// end (helper columns are appended last, and `SELECT *` hides how many come before).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Col {
    Start(usize),
    End(usize),
}

impl Col {
    /// The index in a row of `width` columns.
    pub fn index(self, width: usize) -> usize {
        match self {
            Col::Start(i) => i,
            Col::End(j) => width.saturating_sub(j + 1),
        }
    }
}

/// A sort or grouping key: a column, optionally compared through a WEIGHT_STRING helper
/// column (string collations), ascending or descending.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct SortKey {
    pub col: Col,
    pub weight: Option<Col>,
    pub desc: bool,
}

/// One aggregate to combine across shards.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// COUNT: the sum of per-shard counts.
    Count(Col),
    /// SUM: the sum of per-shard sums (NULL when all are NULL).
    Sum(Col),
    Min {
        col: Col,
        weight: Option<Col>,
    },
    Max {
        col: Col,
        weight: Option<Col>,
    },
    /// AVG rewritten as SUM and COUNT: `sum` becomes sum/count with `scale` more decimals.
    Avg {
        sum: Col,
        count: Col,
    },
    /// COUNT(DISTINCT x): shards group by x too; counts distinct consecutive values.
    CountDistinct {
        col: Col,
        weight: Option<Col>,
    },
    /// SUM(DISTINCT x), likewise.
    SumDistinct {
        col: Col,
        weight: Option<Col>,
    },
}

/// An output column renamed (and, for rewritten aggregates, retyped).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Rename {
    pub col: Col,
    pub name: String,
    /// `count` for COUNT(DISTINCT) (BIGINT), `avg` for AVG (DECIMAL/DOUBLE).
    pub retype: Option<String>,
}

/// A scalar expression evaluated by the proxy (HAVING across shards).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Scalar {
    Col(Col),
    Literal(String),
    Null,
    Not(Box<Scalar>),
    And(Box<Scalar>, Box<Scalar>),
    Or(Box<Scalar>, Box<Scalar>),
    Compare(CompareOp, Box<Scalar>, Box<Scalar>),
    IsNull(Box<Scalar>, bool),
    Arith(ArithOp, Box<Scalar>, Box<Scalar>),
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CompareOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// A write (UPDATE, DELETE, DDL) executed on every selected shard.
#[derive(Debug, Clone, Serialize)]
pub struct WritePlan {
    pub route: Route,
    /// How the per-shard answers combine.
    pub combine: Combine,
    /// For DDL: what to change in the VSchema afterwards.
    pub vschema: Option<super::ddl::VschemaChange>,
    /// For writes to a table owning lookup vindexes: keeping their tables in step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lookups: Option<Box<LookupMaintenance>>,
}

/// Keeping owned lookup vindexes in step with an UPDATE or DELETE of their owner.
#[derive(Debug, Clone, Serialize)]
pub struct LookupMaintenance {
    /// The table written (owner of the lookup vindexes).
    pub owner: String,
    /// Reads the rows the write touches: the sharding column, then each lookup column.
    pub select: Route,
    /// The owned lookup vindexes, in the order of the selected lookup columns.
    pub vindexes: Vec<String>,
    /// UPDATE: each lookup column's new value (None: unchanged). DELETE: empty.
    pub new_values: Vec<Option<ValueExpr>>,
    pub delete: bool,
}

/// How per-shard OK packets combine into the client's one OK.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// Sum affected rows (sharded tables: each row lives on one shard).
    Sum,
    /// Report the first shard's answer (reference tables and DDL: every shard has a copy).
    First,
}
