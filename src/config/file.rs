//! `herald.toml`: the hub's settings in a file, with the flags' own names and spellings
//! (`ttl = "30s"`, `forward-header = ["x-tenant"]`, `headless = true`). It is read from
//! `--config FILE`, or else `herald.toml` in the working directory, or else
//! `herald/herald.toml` in the user's config directory. A flag beats the environment,
//! which beats the file, which beats the defaults: the file's settings are handed to the
//! same parser as the flags, so each value is checked exactly as a flag's is
//! ([`parse_noting_given`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Parser;
use clap::parser::ValueSource;

use crate::values::xdg_dir;

/// The file's name, in the working directory and in the user's config directory.
const FILE_NAME: &str = "herald.toml";
/// A config file larger than this is surely not one.
const MAX_FILE: u64 = 1024 * 1024;
/// The most values one setting may list.
const MAX_LIST: usize = 1_000;

/// Parses the command line `args` as `P` (the hub's [`Config`], or the whole command line
/// with its subcommands, `crate::cli::Herald`), exiting with a message on a bad flag, with
/// the config file's settings under the flags, and names, by clap id, the flags the user
/// actually gave, as opposed to defaults.
pub fn parse_noting_given<P, I, T>(args: I) -> (P, Vec<String>)
where
    P: Parser,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let given = |matches: &clap::ArgMatches| -> Vec<String> {
        matches
            .ids()
            .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::CommandLine))
            .map(|id| id.as_str().to_owned())
            .collect()
    };
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let command = P::command();
    let mut matches = command.clone().get_matches_from(&args);
    let typed = given(&matches);
    let mut from_file = Vec::new();
    // Subcommands talk to a hub; the file holds the hub's own settings.
    let path = if matches.subcommand().is_some() {
        None
    } else {
        locate(
            matches
                .get_one::<std::path::PathBuf>("config")
                .map(|p| p.as_path()),
        )
    };
    if let Some(path) = &path {
        let (flags, set) = as_flags(path, &command, &typed).unwrap_or_else(|err| {
            eprintln!("herald: {err}");
            std::process::exit(2)
        });
        // The file's settings go first, as flags the command line did not give, and
        // are checked by the same parser (a bad value names the flag, and the file).
        let mut all = args[..1.min(args.len())].to_vec();
        all.extend(flags);
        all.extend(args.iter().skip(1).cloned());
        matches = command
            .clone()
            .try_get_matches_from(all)
            .unwrap_or_else(|err| {
                eprintln!("herald: in {}:", path.display());
                err.exit()
            });
        from_file = set;
    }
    if matches.get_flag("print_config") {
        print!(
            "{}",
            describe(&command, &matches, &from_file, path.as_deref())
        );
        std::process::exit(0);
    }
    let parsed = P::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    // Flags typed now, not the file's: the window's remembered settings beat the file
    // (it is the hub's defaults), and only a flag given now beats them.
    (parsed, typed)
}

/// Where the file is: the one given, or the first of the usual places that exists.
pub(super) fn locate(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = given {
        return Some(path.to_owned());
    }
    let here = PathBuf::from(FILE_NAME);
    if here.is_file() {
        // Said, since a checkout of someone else's project may carry one (with a `bind`
        // or an `allow-origin` of its own).
        eprintln!("herald: reading settings from ./{FILE_NAME}");
        return Some(here);
    }
    let config_dir = xdg_dir("XDG_CONFIG_HOME", ".config")?;
    Some(config_dir.join("herald").join(FILE_NAME)).filter(|path| path.is_file())
}

/// The file's settings as flags (`--ttl`, `30s`, ...) for the arguments of `command`
/// that neither the command line (`given`, by id) nor the environment set, and the ids
/// they set. An unknown key, a table, or a value that is neither text, number, boolean
/// nor a list of those is an error that names the file and the key.
pub(super) fn as_flags(
    path: &Path,
    command: &clap::Command,
    given: &[String],
) -> Result<(Vec<OsString>, Vec<String>), String> {
    let shown = path.display();
    // A named pipe or a socket would hold the start until someone writes to it (or for
    // ever): refused before it is opened. Devices are read with the limit below.
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        let kind = std::fs::metadata(path)
            .map_err(|err| format!("cannot read the config file {shown}: {err}"))?
            .file_type();
        if kind.is_fifo() || kind.is_socket() {
            return Err(format!(
                "the config file {shown} is a named pipe or a socket, not a file; give a TOML \
                 file"
            ));
        }
    }
    // Read with a limit, not by the size it reports: /dev/zero reports none.
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| {
            std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_FILE + 1), &mut text)
        })
        .map_err(|err| format!("cannot read the config file {shown}: {err}"))?;
    if text.len() as u64 > MAX_FILE {
        return Err(format!(
            "the config file {shown} is over 1 MiB; a config file is not that big"
        ));
    }
    let table: toml::Table = text
        .parse()
        .map_err(|err| format!("the config file {shown} is not TOML: {err}"))?;
    let mut flags = Vec::new();
    let mut set = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let Some((_, arg)) = settings(command).find(|(name, _)| *name == long) else {
            let known: Vec<&str> = settings(command).map(|(name, _)| name).collect();
            return Err(format!(
                "{shown}: `{key}` is not a setting; the settings are the flags' names: {}",
                known.join(", ")
            ));
        };
        let id = arg.get_id().as_str().to_owned();
        let flag = format!("--{long}");
        let values = match value {
            toml::Value::Array(items) if items.len() > MAX_LIST => {
                return Err(format!(
                    "{shown}: `{key}` lists {} values; at most {MAX_LIST}",
                    items.len()
                ));
            }
            toml::Value::Array(items) => items
                .iter()
                .map(|item| scalar(item, &shown, key))
                .collect::<Result<Vec<_>, _>>()?,
            other => vec![scalar(other, &shown, key)?],
        };
        // A switch's shape is checked here, before a flag or the environment may
        // override it: a file that is wrong says so whatever else is given.
        let switch = !arg.get_action().takes_values();
        let on = match values.as_slice() {
            [on] if switch && on == "true" => true,
            [off] if switch && off == "false" => false,
            _ if switch => return Err(format!("{shown}: `{key}` is a switch: true or false")),
            _ => true,
        };
        let from_env = arg
            .get_env()
            .is_some_and(|name| std::env::var_os(name).is_some());
        if given.contains(&id) || from_env || !on || values.is_empty() {
            continue;
        }
        if switch {
            flags.push(OsString::from(&flag));
        } else {
            for value in values {
                // One argument, `--flag=value`: a value that starts with `-` (a token)
                // must not be read as a flag.
                flags.push(OsString::from(format!("{flag}={value}")));
            }
        }
        set.push(id);
    }
    Ok((flags, set))
}

/// The flags a config file may set, by long name: all but those about the file itself
/// and clap's own.
fn settings(command: &clap::Command) -> impl Iterator<Item = (&str, &clap::Arg)> {
    command.get_arguments().filter_map(|arg| {
        let long = arg.get_long()?;
        let setting = !matches!(long, "config" | "print-config" | "help" | "version");
        setting.then_some((long, arg))
    })
}

fn scalar(
    value: &toml::Value,
    shown: &std::path::Display<'_>,
    key: &str,
) -> Result<String, String> {
    match value {
        toml::Value::String(text) => Ok(text.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(x) => Ok(x.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err(format!(
            "{shown}: `{key}` must be text, a number, true or false, or a list of those"
        )),
    }
}

/// What `--print-config` shows: every setting with the value in force and where it came
/// from, as TOML that could be a config file itself.
pub(super) fn describe(
    command: &clap::Command,
    matches: &clap::ArgMatches,
    from_file: &[String],
    file: Option<&Path>,
) -> String {
    let mut out = String::new();
    match file {
        Some(path) => out.push_str(&format!("# config file: {}\n", path.display())),
        None => {
            out.push_str("# no config file (herald.toml here, or in the user's config directory)\n")
        }
    }
    for (long, arg) in settings(command) {
        let id = arg.get_id().as_str();
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let secret = matches!(long, "token" | "signing-secret");
        let source = match matches.value_source(id) {
            _ if from_file.iter().any(|f| f == id) => "config file",
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) => "default",
            _ => "not set",
        };
        let shown = if !arg.get_action().takes_values() {
            matches.get_flag(id).to_string()
        } else if values.is_empty() {
            "[]".to_owned()
        } else if secret {
            "\"***\"".to_owned()
        } else if arg.get_action().takes_values()
            && matches!(arg.get_action(), clap::ArgAction::Append)
        {
            let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
            format!("[{}]", quoted.join(", "))
        } else {
            format!("{:?}", values.join(","))
        };
        let line = if values.is_empty()
            && arg.get_action().takes_values()
            && !matches!(arg.get_action(), clap::ArgAction::Append)
        {
            format!("# {long} is not set")
        } else {
            format!("{long} = {shown}")
        };
        out.push_str(&format!("{line:<48} # {source}\n"));
    }
    out
}
