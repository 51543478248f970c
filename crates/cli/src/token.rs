//! `shardfeed token`: a bearer token for grpcurl and other callers, signed with the configured
//! HS256 key (the development key in development mode, as `shardfeed dev env` sets).

use std::time::Duration;

use anyhow::{bail, Context};
use shardfeed_server::auth::Role;

#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// The user the token acts as (its subject); required for `--role user`.
    #[arg(long, value_name = "ID")]
    user: Option<i64>,
    /// `user` acts only as itself; `service` for any user; `admin` also for operator RPCs.
    #[arg(long, default_value = "user", value_parser = parse_role)]
    role: Role,
    /// The subject of a service or admin token [default: the user id, else shardfeed-cli].
    #[arg(long, value_name = "NAME")]
    subject: Option<String>,
    /// How long the token is valid, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=31 * 24 * 3600))]
    ttl: u64,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

/// The subject the arguments name.
fn subject(args: &TokenArgs) -> anyhow::Result<String> {
    match (args.role, args.user, &args.subject) {
        (Role::User, Some(id), None) if id > 0 => Ok(id.to_string()),
        (Role::User, Some(id), None) => bail!("--user {id}: a user id is positive"),
        (Role::User, None, _) => bail!("a user token needs --user ID"),
        (Role::User, Some(_), Some(_)) => {
            bail!("--subject is for service and admin tokens; a user's subject is --user")
        }
        (_, _, Some(name)) if name.is_empty() => bail!("--subject must not be empty"),
        (_, _, Some(name)) => Ok(name.clone()),
        (_, Some(id), None) => Ok(id.to_string()),
        (_, None, None) => Ok(crate::client::CLI_SUBJECT.to_owned()),
    }
}

pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let settings = crate::dev::cli_settings()?;
    let subject = subject(&args)?;
    let token = shardfeed_server::auth::mint(
        &settings,
        &subject,
        args.role,
        Duration::from_secs(args.ttl),
    )
    .context("shardfeed token")?;
    eprintln!(
        "a {} token for {subject}, valid {} s (iss {}, aud {})",
        args.role, args.ttl, settings.auth.issuer, settings.auth.audience
    );
    println!("{token}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TokenArgs,
    }

    fn parse(argv: &[&str]) -> anyhow::Result<String> {
        let cli = Cli::try_parse_from(std::iter::once("token").chain(argv.iter().copied()))?;
        subject(&cli.args)
    }

    #[test]
    fn the_subject_follows_the_role() {
        assert_eq!(parse(&["--user", "7"]).unwrap(), "7");
        assert_eq!(parse(&["--role", "service"]).unwrap(), "shardfeed-cli");
        assert_eq!(
            parse(&["--role", "admin", "--subject", "ops"]).unwrap(),
            "ops"
        );
        assert!(parse(&[]).unwrap_err().to_string().contains("--user"));
        assert!(parse(&["--user", "0"]).is_err());
        assert!(parse(&["--role", "root"]).is_err());
        assert!(parse(&["--user", "1", "--ttl", "0"]).is_err());
    }
}
