//! README's configuration table is generated from the declarations, so it cannot drift from them.
//!
//! Every setting is declared once, as a field of a clap `Args` struct beside its component
//! (`actors::config`). [`run_settings`] reads them back from `order_process::cli::command()`, the
//! command line the binary parses; [`render_table`] turns them into the Markdown table between
//! `<!-- settings:begin -->` and `<!-- settings:end -->` in README.md: the variable, the flag,
//! the declared default and the first sentence of the help text. The test fails when README
//! differs and prints the table it expects; `UPDATE_README=1` rewrites the block instead:
//!
//! ```sh
//! UPDATE_README=1 cargo nextest run -p order-process --test integration settings_docs
//! ```
//!
//! So the meaning column IS the `///` doc of each field: a cell that reads badly is fixed there.

use clap::Arg;
use std::collections::BTreeSet;
use std::path::PathBuf;

const BEGIN: &str = "<!-- settings:begin -->";
const END: &str = "<!-- settings:end -->";

/// One setting of `order-process run`, as its declaration states it.
pub(crate) struct Setting {
    /// The environment variable.
    pub env: String,
    /// The flag, `--name`.
    pub flag: String,
    /// The declared default as the parser reads it; `None` when the setting is optional.
    pub default: Option<String>,
    /// What an optional setting defaults to when its help ends with a `[default: ...]` note, the
    /// way clap notes declared defaults (a computed one, such as the dead-letter queue's).
    pub default_note: Option<String>,
    /// The help text without that note.
    pub help: String,
    /// The declaration itself, for its value parser and possible values.
    pub arg: Arg,
}

impl Setting {
    /// The values of an enumerated setting (a `ValueEnum`), with their help; empty for the
    /// others, booleans included.
    pub fn choices(&self) -> Vec<(String, Option<String>)> {
        let values: Vec<_> = self
            .arg
            .get_possible_values()
            .into_iter()
            .filter(|value| !value.is_hide_set())
            .map(|value| (value.get_name().to_owned(), value.get_help().map(ToString::to_string)))
            .collect();
        let boolean = values.len() == 2 && values.iter().all(|(name, _)| name == "true" || name == "false");
        if boolean { Vec::new() } else { values }
    }
}

/// The settings of `order-process run` in the order `--help` lists them.
pub(crate) fn run_settings() -> Vec<Setting> {
    settings_of("run")
}

fn settings_of(subcommand: &str) -> Vec<Setting> {
    let mut command = order_process::cli::command();
    command.build();
    let sub = command.find_subcommand(subcommand).unwrap_or_else(|| panic!("no subcommand {subcommand}"));
    sub.get_arguments()
        .filter(|arg| arg.get_id() != "help" && arg.get_id() != "version")
        .map(|arg| {
            let flag = format!("--{}", arg.get_long().unwrap_or_else(|| panic!("{} has no long flag", arg.get_id())));
            let env = arg
                .get_env()
                .unwrap_or_else(|| panic!("{flag} of `{subcommand}` has no environment variable (add `env = ...`)"))
                .to_string_lossy()
                .into_owned();
            let help = arg.get_help().map(ToString::to_string).unwrap_or_else(|| panic!("{flag} has no `///` doc"));
            let declared: Vec<_> = arg.get_default_values().iter().map(|d| d.to_string_lossy()).collect();
            let default = (!declared.is_empty()).then(|| declared.join(","));
            let note = help.trim_end().strip_suffix(']').and_then(|h| h.rsplit_once("[default: "));
            let (help, default_note) = match note {
                Some((help, note)) if default.is_none() => (help.trim_end().to_owned(), Some(note.to_owned())),
                _ => (help, None),
            };
            Setting { env, flag, default, default_note, help, arg: arg.clone() }
        })
        .collect()
}

/// The help text up to the end of its first sentence (clap already drops the final period).
fn first_sentence(help: &str) -> &str {
    let bytes = help.as_bytes();
    let end = (0..bytes.len().saturating_sub(2))
        .find(|&i| bytes[i] == b'.' && bytes[i + 1] == b' ' && bytes[i + 2].is_ascii_uppercase())
        .unwrap_or(help.len());
    help[..end].trim_end_matches('.')
}

/// `Human-readable` -> `human-readable`, but `JSON ...` stays `JSON ...`.
fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if second.is_lowercase() => {
            first.to_lowercase().chain(std::iter::once(second)).chain(chars).collect()
        }
        _ => text.to_owned(),
    }
}

/// The meaning column: the first sentence of the help and, for an enumerated setting, its values
/// with their own help.
fn meaning(setting: &Setting) -> String {
    let sentence = first_sentence(&setting.help).to_owned();
    let choices: Vec<String> = setting
        .choices()
        .into_iter()
        .map(|(name, help)| match help {
            Some(help) => format!("`{name}` ({})", lowercase_first(first_sentence(&help))),
            None => format!("`{name}`"),
        })
        .collect();
    match choices.split_last() {
        None => sentence,
        Some((last, [])) => format!("{sentence}: {last}"),
        Some((last, rest)) => format!("{sentence}: {} or {last}", rest.join(", ")),
    }
}

/// The Markdown table of `settings`, one row each, ending with a newline.
pub(crate) fn render_table(settings: &[Setting]) -> String {
    let cell = |text: &str| text.replace('|', "\\|").replace('\n', " ");
    let mut table = String::from("| environment variable | flag | default | meaning |\n| --- | --- | --- | --- |\n");
    for setting in settings {
        let default = match setting.default.as_deref().or(setting.default_note.as_deref()) {
            Some("") => "(empty)".to_owned(),
            Some(default) => format!("`{default}`"),
            None => "(unset)".to_owned(),
        };
        table +=
            &format!("| `{}` | `{}` | {} | {} |\n", setting.env, setting.flag, cell(&default), cell(&meaning(setting)));
    }
    table
}

fn readme_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md")
}

/// README split around the generated block: (up to and with the begin marker line, the block,
/// from the end marker line on).
fn split_readme(readme: &str) -> (&str, &str, &str) {
    let begin = readme.find(BEGIN).unwrap_or_else(|| panic!("README.md has no {BEGIN} line"));
    let body = begin + readme[begin..].find('\n').expect("a line after the begin marker") + 1;
    let end = body + readme[body..].find(END).unwrap_or_else(|| panic!("README.md has no {END} after {BEGIN}"));
    (&readme[..body], &readme[body..end], &readme[end..])
}

#[test]
fn readme_configuration_table_is_the_declared_settings() {
    let expected = render_table(&run_settings());
    let path = readme_path();
    let readme = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (before, current, after) = split_readme(&readme);
    if current == expected {
        return;
    }
    if std::env::var_os("UPDATE_README").is_some() {
        std::fs::write(&path, format!("{before}{expected}{after}")).expect("README.md is writable");
        eprintln!("rewrote the settings table of {}", path.display());
        return;
    }
    panic!(
        "README.md's configuration table differs from the declared settings. Regenerate it with\n\n  \
         UPDATE_README=1 cargo nextest run -p order-process --test integration settings_docs\n\n\
         Expected between {BEGIN} and {END}:\n\n{expected}"
    );
}

#[test]
fn the_table_of_run_covers_the_settings_of_every_command() {
    let run: BTreeSet<_> = run_settings().into_iter().map(|s| (s.env, s.flag)).collect();
    for subcommand in ["migrate", "dlq"] {
        for setting in settings_of(subcommand) {
            assert!(
                run.contains(&(setting.env.clone(), setting.flag.clone())),
                "`{subcommand}` reads {} ({}), which `run` does not: README's table (settings of `run`) misses it",
                setting.env,
                setting.flag
            );
        }
    }
}

#[test]
fn cells_keep_the_first_sentence_and_escape_pipes() {
    assert_eq!(
        first_sentence("Deliveries in flight (AMQP prefetch). Bounds memory"),
        "Deliveries in flight (AMQP prefetch)"
    );
    assert_eq!(
        first_sentence("Delays before the 1st, 2nd, ... redelivery"),
        "Delays before the 1st, 2nd, ... redelivery"
    );
    assert_eq!(first_sentence("One sentence."), "One sentence");
    assert_eq!(lowercase_first("Human-readable"), "human-readable");
    assert_eq!(lowercase_first("JSON otherwise"), "JSON otherwise");

    let table = render_table(&run_settings());
    let row = |env: &str| {
        let start = format!("| `{env}` |");
        table.lines().find(|line| line.starts_with(&start)).unwrap_or_else(|| panic!("no row {env}")).to_owned()
    };
    assert!(row("ORDER_PROCESS_PREFETCH").contains("| `--prefetch` | `512` |"), "{}", row("ORDER_PROCESS_PREFETCH"));
    assert!(row("ORDER_PROCESS_REDIS_KEY_PREFIX").contains("| (empty) |"));
    // A computed default, noted at the end of the help the way clap notes declared ones.
    let dead_letter = row("ORDER_PROCESS_DEAD_LETTER_QUEUE");
    assert!(dead_letter.contains("| `<inbound-queue>.dlq` |") && !dead_letter.contains("[default:"), "{dead_letter}");
    // An enumerated setting lists its values; a boolean does not.
    let queue_type = row("ORDER_PROCESS_QUEUE_TYPE");
    assert!(queue_type.contains("`classic` or `quorum` ("), "{queue_type}");
    assert!(!row("ORDER_PROCESS_SINGLE_ACTIVE_CONSUMER").contains("`true`"));
    // Every row has exactly the four cells of the header, whatever the help says.
    for line in table.lines() {
        assert_eq!(line.replace("\\|", "").matches('|').count(), 5, "{line}");
    }
}
