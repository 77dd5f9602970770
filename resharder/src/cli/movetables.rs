//! `shardctl movetables`: move tables from one keyspace into another (typically the
//! unsharded keyspace an application starts with into a sharded one), online. The verbs
//! are those of `shardctl reshard`; the workflow runs the same steps (see
//! `reshard/movetables.rs` for what differs).

use super::reshard::{credentials, list, status, step};
use super::{target, Cli};
use crate::reshard::movetables::{self, Request};
use crate::reshard::workflow::{Options, Phase};
use crate::reshard::{cutover, finish, plan, verify, Controller};
use anyhow::Result;
use clap::{Args, Subcommand};
use shardgate_topology::Store;

#[derive(Subcommand, Debug)]
pub enum MoveTablesCommand {
    /// Before anything changes: rows and bytes to move, refusals and why, the copy rate
    /// measured on a sample, predicted duration and finish, disk needed per target.
    Plan {
        /// The keyspace the tables are in now.
        #[arg(long)]
        from: String,
        /// The keyspace they would move into.
        #[arg(long)]
        to: String,
        /// Tables, comma-separated.
        #[arg(long, required = true, value_delimiter = ',')]
        tables: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start: schema copy, change capture, routing rules, backfill (then stop at
    /// Backfilled).
    Start(MoveArgs),
    /// Every step in order: start, backfill, verify, cutover, complete.
    Run(MoveArgs),
    /// Show a workflow's phase, copy progress, rate, verify and cutover results.
    Status {
        #[command(flatten)]
        wf: Workflow,
        /// Refresh every second until the workflow finishes.
        #[arg(long)]
        watch: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare the source tables with their copies chunk by chunk; re-copy what differs.
    Verify(Workflow),
    /// Switch the tables to the target keyspace (writes held briefly).
    Cutover(Workflow),
    /// After cutover: switch the tables back to the source keyspace.
    Rollback(Workflow),
    /// After cutover: end the workflow and drop the source tables (asks first).
    Complete {
        #[command(flatten)]
        wf: Workflow,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Before cutover: stop the workflow, drop the copies and the routing rules.
    Abort {
        #[command(flatten)]
        wf: Workflow,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Continue a workflow whose controller stopped (or was killed).
    Resume(Workflow),
    /// List workflows (reshard and movetables).
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct Workflow {
    /// The workflow name (`<from>2<to>` unless `start` was given another).
    #[arg(long)]
    pub workflow: String,
}

#[derive(Args, Debug)]
pub struct MoveArgs {
    /// The keyspace the tables are in now.
    #[arg(long)]
    pub from: String,
    /// The keyspace they move into (sharded by its VSchema; tables it does not declare
    /// are sharded by its default vindex on the first primary-key column).
    #[arg(long)]
    pub to: String,
    /// Tables to move, comma-separated.
    #[arg(long, required = true, value_delimiter = ',')]
    pub tables: Vec<String>,
    /// Workflow name (default: `<from>2<to>`).
    #[arg(long)]
    pub workflow: Option<String>,
    #[command(flatten)]
    pub copy: super::reshard::CopyArgs,
}

fn as_reshard_arg(w: &Workflow) -> super::reshard::WorkflowArg {
    super::reshard::WorkflowArg {
        keyspace: None,
        workflow: Some(w.workflow.clone()),
    }
}

pub async fn run(cli: &Cli, cmd: &MoveTablesCommand) -> Result<()> {
    let store = target::store(cli).await?;
    let creds = credentials(cli)?;
    match cmd {
        MoveTablesCommand::Plan {
            from,
            to,
            tables,
            json,
        } => {
            let snapshot = crate::reshard::snapshot(&store).await?;
            let req = Request {
                name: String::new(),
                from_keyspace: from.clone(),
                to_keyspace: to.clone(),
                tables: tables.clone(),
                options: Options::default(),
                goal: Phase::Complete,
            };
            let p = plan::make_move(&snapshot, &req, &creds).await?;
            super::reshard::print_plan(&p, *json)
        }
        MoveTablesCommand::Start(a) => start(&store, &creds, a, Phase::Backfilled).await,
        MoveTablesCommand::Run(a) => start(&store, &creds, a, Phase::Complete).await,
        MoveTablesCommand::Status { wf, watch, json } => {
            status(&store, &creds, &wf.workflow, *watch, *json).await
        }
        MoveTablesCommand::List { json } => list(&store, *json).await,
        MoveTablesCommand::Verify(wf) => {
            step(&store, &creds, &as_reshard_arg(wf), |c| {
                Box::pin(verify::run(c))
            })
            .await
        }
        MoveTablesCommand::Cutover(wf) => {
            step(&store, &creds, &as_reshard_arg(wf), |c| {
                Box::pin(cutover::run(c, 3))
            })
            .await
        }
        MoveTablesCommand::Rollback(wf) => {
            step(&store, &creds, &as_reshard_arg(wf), |c| {
                Box::pin(cutover::rollback(c))
            })
            .await
        }
        MoveTablesCommand::Complete { wf, yes } => {
            super::confirm(*yes, "complete the move and drop the source tables")?;
            step(&store, &creds, &as_reshard_arg(wf), |c| {
                Box::pin(finish::complete(c))
            })
            .await
        }
        MoveTablesCommand::Abort { wf, yes } => {
            super::confirm(*yes, "abort the move and drop the target copies")?;
            step(&store, &creds, &as_reshard_arg(wf), |c| {
                Box::pin(finish::abort(c))
            })
            .await
        }
        MoveTablesCommand::Resume(wf) => {
            let progress = super::progress::spawn(store.clone(), wf.workflow.clone(), false);
            let r = step(&store, &creds, &as_reshard_arg(wf), |c| {
                let goal = c.wf.doc.goal;
                Box::pin(c.drive(goal))
            })
            .await;
            progress.finish().await;
            r
        }
    }
}

async fn start(
    store: &Store,
    creds: &crate::reshard::db::Credentials,
    a: &MoveArgs,
    goal: Phase,
) -> Result<()> {
    let name = a
        .workflow
        .clone()
        .unwrap_or_else(|| format!("{}2{}", a.from, a.to));
    let req = Request {
        name: name.clone(),
        from_keyspace: a.from.clone(),
        to_keyspace: a.to.clone(),
        tables: a.tables.clone(),
        options: a.copy.options(false),
        goal,
    };
    if a.copy.dry_run {
        return match movetables::check(store, &req, creds).await {
            Ok(doc) => super::reshard::print_dry_run(&name, Some(&doc), goal, &[], &[]),
            Err(e) => super::reshard::print_dry_run(&name, None, goal, &[format!("{e:#}")], &[]),
        };
    }
    movetables::create(store, &req, creds).await?;
    println!(
        "workflow {name}: {} from {} to {}",
        a.tables.join(","),
        a.from,
        a.to
    );
    let mut c = Controller::open(store, &name, creds).await?;
    let progress = super::progress::spawn(store.clone(), name.clone(), a.copy.json);
    let r = c.drive(goal).await;
    progress.finish().await;
    println!(
        "{}: {} - {}",
        c.wf.doc.name, c.wf.doc.phase, c.wf.doc.message
    );
    c.close().await;
    r
}
