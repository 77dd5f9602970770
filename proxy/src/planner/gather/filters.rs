//! Which rows of a table occurrence can stay on the shards: conjuncts that only read the
//! occurrence (pushed into its fetch), and equalities with occurrences fetched earlier
//! (their values become an IN list: the nested-loop step, routed by vindex when the column
//! is the occurrence's sharding column).
//!
//! The rule behind both: a row may be left out only if no result row can contain it.
//! - A WHERE conjunct that reads only occurrence T rejects every result row built from a
//!   T row that fails it, if T cannot be NULL-padded; if it can, only when the conjunct is
//!   *null-rejecting* (a padded row fails it too), so only simple comparisons are pushed.
//! - An inner join's ON conjunct rejects the pair, so the row never reaches anything.
//! - An outer join's ON conjunct only filters the padded side; rows of the preserved side
//!   always stay.
//! - `T.a = U.b` (plain `=`, both columns) in WHERE or an inner ON needs a U row with that
//!   value, whatever the padding (a padded U fails it). U may be in an enclosing block (a
//!   correlated subquery: T's rows only matter for outer rows they match); the outer
//!   block is never reduced by an inner one.

use super::blocks::{Analysis, Place};
use sqlparser::ast::{BinaryOperator, Expr, InTarget, UnaryOperator, Value};

/// An equality that reduces occurrence `target` by the values of `source`'s column.
#[derive(Debug, Clone, PartialEq)]
pub struct Reducer {
    pub target: usize,
    pub column: String,
    pub source: usize,
    pub source_column: String,
}

impl Analysis {
    /// The conjuncts that can be pushed into occurrence `o`'s fetch.
    pub fn pushable(&self, o: usize) -> Vec<&Expr> {
        let occ = &self.occurrences[o];
        self.conjuncts
            .iter()
            .filter(|c| c.block == occ.block)
            .filter(|c| self.only_reads(&c.expr, o, c.block))
            .filter(|c| match &c.place {
                Place::Where if occ.nullable => null_rejecting(&c.expr),
                Place::Where | Place::InnerOn => pure(&c.expr),
                Place::OuterOn { padded } => padded.contains(&o) && pure(&c.expr),
            })
            .map(|c| &c.expr)
            .collect()
    }

    /// Every equality that can reduce some occurrence by another's values.
    pub fn reducers(&self) -> Vec<Reducer> {
        let mut out = Vec::new();
        for c in &self.conjuncts {
            let Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } = &c.expr
            else {
                continue;
            };
            let (Some(l), Some(r)) = (self.resolve(left, c.block), self.resolve(right, c.block))
            else {
                continue;
            };
            if l.0 == r.0 {
                continue;
            }
            for (t, u) in [(&l, &r), (&r, &l)] {
                let target = &self.occurrences[t.0];
                // Only occurrences of the conjunct's own block are reduced, by their own
                // block's occurrences or enclosing ones.
                if target.block != c.block || !self.encloses(self.occurrences[u.0].block, c.block) {
                    continue;
                }
                let allowed = match &c.place {
                    Place::Where | Place::InnerOn => true,
                    Place::OuterOn { padded } => padded.contains(&t.0),
                };
                if allowed {
                    out.push(Reducer {
                        target: t.0,
                        column: t.1.clone(),
                        source: u.0,
                        source_column: u.1.clone(),
                    });
                }
            }
        }
        out
    }

    /// Whether every column `e` reads resolves to occurrence `o`, and it reads at least
    /// one column.
    fn only_reads(&self, e: &Expr, o: usize, block: usize) -> bool {
        let mut ok = true;
        let mut any = false;
        let _ = sqlparser::ast::visit_expressions(e, |x| {
            match x {
                Expr::Identifier(_) | Expr::CompoundIdentifier(_) => match self.resolve(x, block) {
                    Some((i, _)) if i == o => any = true,
                    _ => ok = false,
                },
                Expr::Subquery(_) | Expr::Exists { .. } => ok = false,
                Expr::In {
                    target: InTarget::Subquery(_),
                    ..
                } => ok = false,
                _ => {}
            }
            if ok {
                std::ops::ControlFlow::Continue(())
            } else {
                std::ops::ControlFlow::Break(())
            }
        });
        ok && any
    }
}

/// Functions whose value depends only on their arguments (safe to evaluate on another
/// server at another moment).
const PURE_FUNCTIONS: &[&str] = &[
    "ABS",
    "CEIL",
    "CEILING",
    "FLOOR",
    "ROUND",
    "TRUNCATE",
    "MOD",
    "SIGN",
    "LOWER",
    "UPPER",
    "LCASE",
    "UCASE",
    "CONCAT",
    "CONCAT_WS",
    "SUBSTRING",
    "SUBSTR",
    "LEFT",
    "RIGHT",
    "LENGTH",
    "CHAR_LENGTH",
    "CHARACTER_LENGTH",
    "TRIM",
    "LTRIM",
    "RTRIM",
    "REPLACE",
    "REVERSE",
    "LPAD",
    "RPAD",
    "LOCATE",
    "INSTR",
    "COALESCE",
    "IFNULL",
    "NULLIF",
    "IF",
    "GREATEST",
    "LEAST",
    "DATE",
    "YEAR",
    "MONTH",
    "DAY",
    "DAYOFMONTH",
    "HOUR",
    "MINUTE",
    "SECOND",
    "DATE_FORMAT",
    "HEX",
    "UNHEX",
    "MD5",
    "SHA1",
    "SHA2",
    "CRC32",
];

/// A deterministic expression without subqueries, variables or aggregates.
pub fn pure(e: &Expr) -> bool {
    let mut ok = true;
    let _ = sqlparser::ast::visit_expressions(e, |x| {
        ok &= match x {
            Expr::Identifier(id) => !id.value.starts_with('@'),
            Expr::CompoundIdentifier(parts) => parts.len() == 2 && !parts[0].value.starts_with('@'),
            Expr::Value(_)
            | Expr::Nested(_)
            | Expr::BinaryOp { .. }
            | Expr::UnaryOp { .. }
            | Expr::IsNull(_)
            | Expr::IsNotNull(_)
            | Expr::IsTrue(_)
            | Expr::IsFalse(_)
            | Expr::IsNotTrue(_)
            | Expr::IsNotFalse(_)
            | Expr::In {
                target: InTarget::List(_),
                ..
            }
            | Expr::Between { .. }
            | Expr::Like { .. }
            | Expr::ILike { .. }
            | Expr::Cast { .. }
            | Expr::Collate { .. }
            | Expr::Case { .. }
            | Expr::Substring { .. }
            | Expr::Trim { .. }
            | Expr::Extract { .. }
            | Expr::Ceil { .. }
            | Expr::Floor { .. } => true,
            Expr::Function(f) => {
                let name = f.name.to_string().to_ascii_uppercase();
                PURE_FUNCTIONS.contains(&name.as_str()) && f.over.is_none()
            }
            _ => false,
        };
        if ok {
            std::ops::ControlFlow::Continue(())
        } else {
            std::ops::ControlFlow::Break(())
        }
    });
    ok
}

/// A plain column reference.
fn column(e: &Expr) -> bool {
    match e {
        Expr::Nested(inner) => column(inner),
        Expr::Identifier(id) => !id.value.starts_with('@'),
        Expr::CompoundIdentifier(p) => p.len() == 2,
        _ => false,
    }
}

/// A literal or placeholder (no column).
fn constant(e: &Expr) -> bool {
    match e {
        Expr::Nested(inner) => constant(inner),
        Expr::Value(v) => !matches!(v.value, Value::Null),
        Expr::UnaryOp {
            op: UnaryOperator::Minus | UnaryOperator::Plus,
            expr,
        } => constant(expr),
        _ => false,
    }
}

/// A conjunct that is false or unknown when its columns are NULL (so a NULL-padded row
/// fails it): a column compared with constants.
pub fn null_rejecting(e: &Expr) -> bool {
    match e {
        Expr::Nested(inner) => null_rejecting(inner),
        Expr::BinaryOp { left, op, right } => {
            matches!(
                op,
                BinaryOperator::Eq
                    | BinaryOperator::NotEq
                    | BinaryOperator::Lt
                    | BinaryOperator::LtEq
                    | BinaryOperator::Gt
                    | BinaryOperator::GtEq
            ) && ((column(left) && constant(right)) || (constant(left) && column(right)))
        }
        Expr::IsNotNull(inner) => column(inner),
        Expr::In {
            expr,
            target: InTarget::List(list),
            ..
        } => column(expr) && list.iter().all(constant),
        Expr::Between {
            expr, low, high, ..
        } => column(expr) && constant(low) && constant(high),
        Expr::Like { expr, pattern, .. } => column(expr) && constant(pattern),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::MySqlDialect;
    use sqlparser::parser::Parser;

    fn expr(s: &str) -> Expr {
        Parser::new(&MySqlDialect {})
            .try_with_sql(s)
            .unwrap()
            .parse_expr()
            .unwrap()
    }

    #[test]
    fn only_null_rejecting_conjuncts_filter_a_padded_side() {
        for yes in [
            "b.x = 5",
            "5 < b.x",
            "b.x IN (1, 2)",
            "b.x IS NOT NULL",
            "b.x BETWEEN 1 AND 3",
            "b.name LIKE 'a%'",
            "b.x <> 'q'",
        ] {
            assert!(null_rejecting(&expr(yes)), "{yes}");
        }
        for no in [
            "b.x IS NULL",
            "COALESCE(b.x, 0) = 0",
            "b.x = b.y",
            "b.x = NULL",
            "NOT b.x = 1",
            "b.x = 1 OR b.y = 2",
            "b.x <=> 1",
        ] {
            assert!(!null_rejecting(&expr(no)), "{no}");
        }
    }

    #[test]
    fn only_deterministic_expressions_are_pushed() {
        for yes in [
            "a.x + 1 > 3",
            "LOWER(a.name) = 'x'",
            "a.x IN (1, 2) AND a.y IS NULL",
            "CASE WHEN a.x THEN 1 END = 1",
        ] {
            assert!(pure(&expr(yes)), "{yes}");
        }
        for no in [
            "a.x > RAND()",
            "a.t < NOW()",
            "a.x = @v",
            "a.x IN (SELECT 1)",
            "a.x = LAST_INSERT_ID()",
        ] {
            assert!(!pure(&expr(no)), "{no}");
        }
    }
}
