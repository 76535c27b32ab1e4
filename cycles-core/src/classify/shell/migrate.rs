//! Schema migration and ORM tools (`prisma`, `rails`/`rake`, Django's `manage.py`, Laravel's
//! `artisan`, `sequelize`, `knex`, `typeorm`, `drizzle-kit`, `mikro-orm`, `mix ecto.*`,
//! `alembic`, `flask db`, `dotnet ef`, `diesel`, `sqlx`, golang-migrate, `goose`, `flyway`,
//! `liquibase`, `atlas`, `dbmate`, `sqitch`).
//!
//! These run against whatever database `DATABASE_URL` or the project's settings name, which
//! is production as often as not, and several of them drop every table in one word:
//! `prisma migrate reset`, `rails db:drop`, `manage.py flush`, `artisan migrate:fresh`.
//! - `shell.db_reset` (4): drops, resets or wipes a database or all of its tables, or reverts
//!   every migration (`alembic downgrade base`, `knex migrate:rollback --all`).
//! - `shell.db_load` (3): replaces or deletes rows of whole tables (`rails db:fixtures:load`,
//!   `manage.py loaddata`, `sequelize db:seed:undo:all`).
//! - `shell.db_migrate` (3): applies or reverts schema migrations (`rails db:migrate`,
//!   `alembic upgrade head`); a migration may drop a column.
//! - `shell.db_seed` (2): creates a database or inserts seed rows.
//!
//! Reading the migration status is tier 0, generating migration files tier 1. A subcommand
//! without a rule here is an unknown command (tier 2) named by its words, so
//! `rake db:nuke_everything` still meets the name heuristics.

use super::{Stdin, has, inline_code, names, operands, option_values, sql_stdin, unknown_command};
use crate::classify::Verdict;
use crate::classify::sql::SqlDialect;
use crate::model::Tier;

/// Programs this module rates (Django's `manage.py` also when run as `python manage.py`).
pub(super) const PROGRAMS: &[&str] = &[
    "prisma",
    "rails",
    "rake",
    "manage.py",
    "django-admin",
    "artisan",
    "sequelize",
    "sequelize-cli",
    "knex",
    "typeorm",
    "typeorm-ts-node-commonjs",
    "typeorm-ts-node-esm",
    "drizzle-kit",
    "mikro-orm",
    "mix",
    "alembic",
    "flask",
    "diesel",
    "sqlx",
    "migrate",
    "goose",
    "flyway",
    "liquibase",
    "atlas",
    "dbmate",
    "sqitch",
];

const RESET: (Tier, &str) = (Tier::T4, "shell.db_reset");
const LOAD: (Tier, &str) = (Tier::T3, "shell.db_load");
const MIGRATE: (Tier, &str) = (Tier::T3, "shell.db_migrate");
const SEED: (Tier, &str) = (Tier::T2, "shell.db_seed");
const READ: (Tier, &str) = (Tier::T0, "shell.read");
const LOCAL: (Tier, &str) = (Tier::T1, "shell.local_write");
const CODE: (Tier, &str) = (Tier::T2, "shell.inline_code");

/// Rates a migration tool's command; `dotnet ef ...` comes here as `ef` with the words after
/// `ef`.
pub(super) fn classify(name: &str, rest: &[String], stdin: &Stdin<'_>, d: usize, v: &mut Verdict) {
    let ops = operands(rest);
    // Subcommands compared without case or dashes (`dropAll`, `drop-all`).
    let norm: Vec<String> = ops
        .iter()
        .map(|o| o.to_ascii_lowercase().replace(['-', '_'], ""))
        .collect();
    let op = |w: &str| norm.iter().any(|o| o == w);
    let after = |w: &str| {
        norm.iter()
            .position(|o| o == w)
            .and_then(|i| ops.get(i + 1).copied())
    };
    let flag = |flags: &[&str]| has(rest, flags);
    let rated: Option<(Tier, &'static str)> = match name {
        "prisma" => {
            if op("migrate") && op("reset")
                || op("push") && flag(&["--force-reset", "--accept-data-loss"])
            {
                Some(RESET)
            } else if op("migrate") && op("dev") && flag(&["--create-only"]) {
                Some(LOCAL)
            } else if op("migrate") && (op("deploy") || op("dev") || op("resolve"))
                || op("db") && (op("push") || op("execute"))
            {
                Some(MIGRATE)
            } else if op("db") && op("seed") {
                Some(SEED)
            } else if op("migrate") && (op("status") || op("diff"))
                || op("db") && op("pull")
                || op("validate")
                || op("version")
                || op("studio")
            {
                Some(READ)
            } else if op("generate") || op("format") || op("init") {
                Some(LOCAL)
            } else {
                None
            }
        }
        "rails" | "rake" => rails(&ops, stdin, d, v),
        "manage.py" | "django-admin" => django(rest, &ops, &norm, stdin, d, v),
        "artisan" => match norm.first().map(String::as_str) {
            Some("migrate:fresh" | "migrate:reset" | "migrate:refresh" | "db:wipe") => Some(RESET),
            Some("migrate" | "migrate:rollback" | "migrate:install") => Some(MIGRATE),
            Some("db:seed") => Some(SEED),
            Some("migrate:status" | "route:list" | "about" | "list" | "db:show" | "db:table") => {
                Some(READ)
            }
            Some("tinker") => Some(CODE),
            Some(o) if o.starts_with("make:") || o.ends_with(":clear") || o.ends_with(":cache") => {
                Some(LOCAL)
            }
            _ => None,
        },
        "sequelize" | "sequelize-cli" => match norm.first().map(String::as_str) {
            Some("db:drop" | "db:migrate:undo:all") => Some(RESET),
            Some("db:migrate" | "db:migrate:undo") => Some(MIGRATE),
            Some("db:seed:undo:all" | "db:seed:undo") => Some(LOAD),
            Some("db:seed" | "db:seed:all" | "db:create") => Some(SEED),
            Some("db:migrate:status") => Some(READ),
            Some("init" | "migration:generate" | "migration:create" | "model:generate")
            | Some("seed:generate" | "model:create" | "seed:create") => Some(LOCAL),
            _ => None,
        },
        "knex" => match norm.first().map(String::as_str) {
            Some("migrate:rollback") if flag(&["--all"]) => Some(RESET),
            Some("migrate:rollback" | "migrate:down" | "migrate:latest" | "migrate:up") => {
                Some(MIGRATE)
            }
            Some("seed:run") => Some(SEED),
            Some("migrate:status" | "migrate:list" | "migrate:currentversion") => Some(READ),
            Some("init" | "migrate:make" | "seed:make") => Some(LOCAL),
            _ => None,
        },
        "typeorm" | "typeorm-ts-node-commonjs" | "typeorm-ts-node-esm" => {
            match norm.first().map(String::as_str) {
                Some("schema:drop") => Some(RESET),
                Some("schema:sync" | "migration:run" | "migration:revert") => Some(MIGRATE),
                Some("query") => {
                    // `typeorm query "DROP TABLE users"`: the SQL is the next word.
                    match ops.get(1) {
                        Some(q) => crate::classify::sql::apply(q, SqlDialect::Generic, v),
                        None => v.raise(Tier::T4, "shell.sql_unknown_input"),
                    }
                    Some(READ)
                }
                Some("cache:clear") => Some(SEED),
                Some("schema:log" | "migration:show" | "version") => Some(READ),
                Some("init" | "migration:create" | "migration:generate" | "entity:create")
                | Some("subscriber:create") => Some(LOCAL),
                _ => None,
            }
        }
        "drizzle-kit" => match norm.first().map(String::as_str) {
            Some("push") if flag(&["--force"]) => Some(RESET),
            Some("push" | "migrate") => Some(MIGRATE),
            // `drop` deletes a migration file of the project, not a table.
            Some("generate" | "drop" | "up") => Some(LOCAL),
            Some("check" | "studio" | "introspect" | "pull") => Some(READ),
            _ => None,
        },
        "mikro-orm" => match norm.first().map(String::as_str) {
            Some("schema:drop" | "schema:fresh" | "migration:fresh") => Some(RESET),
            Some("schema:update" | "schema:create" | "migration:up" | "migration:down") => {
                Some(MIGRATE)
            }
            Some("migration:list" | "migration:pending" | "debug") => Some(READ),
            Some("migration:create" | "generate-entities" | "cache:clear") => Some(LOCAL),
            Some("seeder:run") => Some(SEED),
            _ => None,
        },
        "mix" => match norm.first().map(String::as_str) {
            Some("ecto.drop" | "ecto.reset") => Some(RESET),
            Some("ecto.rollback") if flag(&["--all"]) => Some(RESET),
            Some("ecto.rollback" | "ecto.migrate" | "ecto.load") => Some(MIGRATE),
            Some("ecto.create" | "ecto.setup") => Some(SEED),
            Some("ecto.migrations") => Some(READ),
            Some("ecto.gen.migration" | "ecto.dump") => Some(LOCAL),
            // Other tasks build, test and fetch (`mix compile`, `mix test`, `mix deps.get`).
            Some(task) if !task.starts_with("ecto") => {
                names::apply(task, v);
                Some(LOCAL)
            }
            _ => None,
        },
        "alembic" => alembic(&norm, word_after(rest, "downgrade")),
        // Flask-Migrate wraps Alembic as `flask db ...`; other `flask` commands are the app's.
        "flask" => match norm.first().map(String::as_str) {
            Some("db") => alembic(&norm[1..], word_after(rest, "downgrade")),
            Some("run" | "routes") => Some(LOCAL),
            Some("shell") => Some(CODE),
            _ => None,
        },
        "ef" => match (
            norm.first().map(String::as_str),
            norm.get(1).map(String::as_str),
        ) {
            (Some("database"), Some("drop")) => Some(RESET),
            // `database update 0` reverts every migration.
            (Some("database"), Some("update")) if ops.get(2) == Some(&"0") => Some(RESET),
            (Some("database"), Some("update")) => Some(MIGRATE),
            (Some("migrations"), Some("remove")) if flag(&["--force", "-f"]) => Some(MIGRATE),
            (Some("migrations"), Some("add" | "remove" | "bundle")) => Some(LOCAL),
            (Some("migrations"), Some("list" | "script" | "has-pending-model-changes"))
            | (Some("dbcontext"), Some("info" | "list" | "script")) => Some(READ),
            (Some("dbcontext"), Some("scaffold" | "optimize")) => Some(LOCAL),
            _ => None,
        },
        "diesel" => {
            if op("database") && (op("reset") || op("drop"))
                || op("migration") && op("revert") && flag(&["--all", "-a"])
            {
                Some(RESET)
            } else if op("migration") && (op("revert") || op("redo") || op("run")) {
                Some(MIGRATE)
            } else if op("database") && op("setup") || op("setup") {
                Some(SEED)
            } else if op("migration") && (op("list") || op("pending")) || op("printschema") {
                Some(READ)
            } else if op("migration") && op("generate") {
                Some(LOCAL)
            } else {
                None
            }
        }
        "sqlx" => {
            if op("database") && (op("drop") || op("reset")) {
                Some(RESET)
            } else if op("migrate") && (op("run") || op("revert")) {
                Some(MIGRATE)
            } else if op("database") && (op("create") || op("setup")) {
                Some(SEED)
            } else if op("migrate") && op("info") {
                Some(READ)
            } else if op("migrate") && op("add") || op("prepare") {
                Some(LOCAL)
            } else {
                None
            }
        }
        // golang-migrate: `migrate -path DIR -database URL down [N]`.
        "migrate" => {
            let down_all = after("down").is_none_or(|n| n.parse::<u64>().is_err());
            if op("drop") || op("down") && (down_all || flag(&["-all", "--all"])) {
                Some(RESET)
            } else if op("down") || op("up") || op("goto") || op("force") {
                Some(MIGRATE)
            } else if op("version") {
                Some(READ)
            } else if op("create") {
                Some(LOCAL)
            } else {
                None
            }
        }
        "goose" => {
            if op("reset") || after("downto") == Some("0") {
                Some(RESET)
            } else if ["down", "downto", "up", "upto", "upbyone", "redo"]
                .iter()
                .any(|w| op(w))
            {
                Some(MIGRATE)
            } else if op("status") || op("version") || op("validate") {
                Some(READ)
            } else if op("create") || op("fix") {
                Some(LOCAL)
            } else {
                None
            }
        }
        "flyway" => {
            if op("clean") {
                Some(RESET)
            } else if op("migrate") || op("undo") || op("repair") || op("baseline") {
                Some(MIGRATE)
            } else if op("info") || op("validate") || op("check") {
                Some(READ)
            } else {
                None
            }
        }
        "liquibase" => {
            let sql_only = norm.iter().any(|o| o.ends_with("sql"));
            if op("dropall") {
                Some(RESET)
            } else if sql_only
                || ["status", "history", "diff", "validate", "snapshot"]
                    .iter()
                    .any(|w| op(w))
            {
                // `updateSQL`, `rollbackSQL`, `update-sql` print the SQL instead of running it.
                Some(READ)
            } else if norm.iter().any(|o| {
                o.starts_with("update")
                    || o.starts_with("rollback")
                    || o.starts_with("changelogsync")
                    || o == "tag"
            }) {
                Some(MIGRATE)
            } else {
                None
            }
        }
        "atlas" => {
            if op("schema") && op("clean") {
                Some(RESET)
            } else if op("schema") && op("apply") || op("migrate") && (op("apply") || op("down")) {
                Some(MIGRATE)
            } else if op("inspect") || op("status") || op("lint") || op("version") {
                Some(READ)
            } else if op("diff") || op("new") || op("hash") {
                Some(LOCAL)
            } else {
                None
            }
        }
        "dbmate" => {
            if op("drop") {
                Some(RESET)
            } else if op("rollback") || op("down") || op("up") || op("migrate") {
                Some(MIGRATE)
            } else if op("create") {
                Some(SEED)
            } else if op("status") || op("wait") {
                Some(READ)
            } else if op("new") || op("dump") {
                Some(LOCAL)
            } else {
                None
            }
        }
        "sqitch" => {
            // `sqitch revert` with no target reverts every change.
            let revert_all = op("revert")
                && !flag(&["--to", "--to-change", "--to-target"])
                && ops.iter().filter(|o| !o.starts_with("db:")).count() <= 1;
            if revert_all {
                Some(RESET)
            } else if op("revert") || op("deploy") || op("rebase") || op("checkout") {
                Some(MIGRATE)
            } else if op("status") || op("log") || op("verify") || op("plan") || op("show") {
                Some(READ)
            } else if op("add") || op("init") || op("rework") || op("bundle") {
                Some(LOCAL)
            } else {
                None
            }
        }
        _ => None,
    };
    match rated {
        Some((tier, rule)) => v.raise(tier, rule),
        None => {
            unknown_command(name, &ops, v);
        }
    }
}

/// The word after `word` in `rest` (relative revisions such as `-1` look like options).
fn word_after<'a>(rest: &'a [String], word: &str) -> Option<&'a str> {
    let i = rest.iter().position(|w| w == word)?;
    rest.get(i + 1).map(String::as_str)
}

/// Alembic (and Flask-Migrate): `downgrade base` reverts every migration.
fn alembic(norm: &[String], downgrade_to: Option<&str>) -> Option<(Tier, &'static str)> {
    let op = |w: &str| norm.iter().any(|o| o == w);
    if op("downgrade") && downgrade_to.is_none_or(|t| t == "base") {
        Some(RESET)
    } else if op("downgrade") || op("upgrade") {
        Some(MIGRATE)
    } else if op("stamp") {
        Some(SEED)
    } else if ["current", "history", "heads", "show", "branches", "check"]
        .iter()
        .any(|w| op(w))
    {
        Some(READ)
    } else if op("revision") || op("init") || op("merge") || op("edit") || op("migrate") {
        // `flask db migrate` autogenerates a revision file; it does not touch the database.
        Some(LOCAL)
    } else {
        None
    }
}

/// Rails and Rake tasks; several may follow one another (`rake db:drop db:create`).
fn rails(
    ops: &[&str],
    stdin: &Stdin<'_>,
    d: usize,
    v: &mut Verdict,
) -> Option<(Tier, &'static str)> {
    let Some(first) = ops.first() else {
        // `rake` alone runs the default task.
        return Some(LOCAL);
    };
    match *first {
        "new" | "generate" | "g" | "destroy" | "server" | "s" | "test" | "t"
        | "assets:precompile" => {
            return Some(LOCAL);
        }
        "console" | "c" => {
            return Some(CODE);
        }
        "runner" | "r" => {
            // Ruby code or a script file.
            if let Some(code) = ops.get(1) {
                inline_code(code, d, v);
            }
            return Some(CODE);
        }
        "dbconsole" | "db" => {
            sql_stdin(SqlDialect::Generic, stdin, v);
            return Some(MIGRATE);
        }
        _ => {}
    }
    let mut worst: Option<(Tier, &'static str)> = None;
    for task in ops.iter().filter(|t| t.contains(':') || **t == "routes") {
        let rated = match *task {
            t if t.starts_with("db:test:") => LOCAL,
            "db:drop" | "db:drop:all" | "db:drop:_unsafe" | "db:reset" | "db:purge"
            | "db:purge:all" | "db:schema:load" | "db:structure:load" | "db:truncate_all"
            | "db:seed:replant" | "db:migrate:reset" | "db:setup" => RESET,
            "db:fixtures:load" => LOAD,
            t if t.starts_with("db:migrate") && !matches!(t, "db:migrate:status") => MIGRATE,
            "db:rollback"
            | "db:prepare"
            | "db:forward"
            | "db:environment:set"
            | "db:schema:cache:clear" => MIGRATE,
            "db:seed" | "db:create" | "db:create:all" => SEED,
            "db:version"
            | "db:migrate:status"
            | "db:abort_if_pending_migrations"
            | "routes"
            | "db:schema:cache:dump"
            | "db:schema:dump"
            | "db:structure:dump" => READ,
            t => {
                names::apply(t, v);
                LOCAL
            }
        };
        if worst.is_none_or(|(tier, _)| rated.0 > tier) {
            worst = Some(rated);
        }
        v.raise(rated.0, rated.1);
    }
    worst.or_else(|| {
        // Tasks without a namespace (`rake build`, `rails about`): named by their words.
        for t in ops.iter().take(4) {
            names::apply(t, v);
        }
        Some(LOCAL)
    })
}

/// Django's management commands.
fn django(
    rest: &[String],
    ops: &[&str],
    norm: &[String],
    stdin: &Stdin<'_>,
    d: usize,
    v: &mut Verdict,
) -> Option<(Tier, &'static str)> {
    match norm.first().map(String::as_str) {
        Some("flush" | "resetdb" | "resetschema" | "dropdb") => Some(RESET),
        // `migrate APP zero` unapplies every migration of the app: its tables are dropped.
        Some("migrate") if ops.get(2) == Some(&"zero") => Some(RESET),
        Some("migrate") => Some(MIGRATE),
        Some("loaddata") => Some(LOAD),
        Some("createcachetable" | "createsuperuser" | "changepassword" | "clearsessions") => {
            Some(SEED)
        }
        Some("dbshell") => {
            sql_stdin(SqlDialect::Generic, stdin, v);
            Some(MIGRATE)
        }
        Some("shell") => {
            for code in option_values(rest, &["-c"], &["--command"]) {
                inline_code(code, d, v);
            }
            Some(CODE)
        }
        Some(
            "showmigrations" | "sqlmigrate" | "sqlflush" | "sqlsequencereset" | "check"
            | "inspectdb" | "diffsettings" | "dumpdata" | "help" | "version",
        ) => Some(READ),
        Some(
            "makemigrations" | "squashmigrations" | "collectstatic" | "startapp" | "startproject"
            | "test" | "runserver" | "compilemessages" | "makemessages",
        ) => Some(LOCAL),
        _ => None,
    }
}
