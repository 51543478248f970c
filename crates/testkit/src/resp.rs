//! A minimal blocking RESP2 client for the testkit's own admin commands (PING, CLUSTER INFO,
//! ...): polling with it is much cheaper than spawning redis-cli each time. Every call
//! authenticates first (`AUTH user password`), as the nodes accept no one else.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::redis::RedisCredentials;

/// Bounds every admin call, so that a paused (SIGSTOPped) node cannot hang the testkit.
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// The node refused the credentials (`WRONGPASS`, or a node without the user).
#[derive(Debug, thiserror::Error)]
#[error("{addr} refused AUTH as {user}: {reply}")]
pub(crate) struct AuthRefused {
    pub(crate) addr: String,
    user: String,
    reply: String,
}

/// Sends `AUTH` and one command to `addr` on a fresh connection and reads the command's reply.
pub(crate) fn call(addr: &str, auth: &RedisCredentials, args: &[&str]) -> anyhow::Result<Reply> {
    let socket: SocketAddr = addr
        .parse()
        .with_context(|| format!("bad address {addr}"))?;
    let stream = TcpStream::connect_timeout(&socket, TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut request = encode(&["AUTH", &auth.username, &auth.password]);
    request.extend_from_slice(&encode(args));
    (&stream)
        .write_all(&request)
        .with_context(|| format!("sending {} to {addr}", args[0]))?;
    let mut reader = BufReader::new(&stream);
    match read_reply(&mut reader).with_context(|| format!("reading AUTH's reply from {addr}"))? {
        Reply::Status(ok) if ok == "OK" => {}
        Reply::Error(reply) => {
            return Err(AuthRefused {
                addr: addr.to_owned(),
                user: auth.username.clone(),
                reply,
            }
            .into())
        }
        other => bail!("{addr} answered AUTH with unexpected {other:?}"),
    }
    read_reply(&mut reader).with_context(|| format!("reading the reply of {} from {addr}", args[0]))
}

/// One command as a RESP array of bulk strings.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request
}

/// Like [`call`], for commands that answer with text; a Redis error becomes an `Err`.
pub(crate) fn call_text(
    addr: &str,
    auth: &RedisCredentials,
    args: &[&str],
) -> anyhow::Result<String> {
    match call(addr, auth, args)? {
        Reply::Status(text) => Ok(text),
        Reply::Bulk(Some(bytes)) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Reply::Error(err) => bail!("{addr} answered {} with {err}", args[0]),
        other => bail!("{addr} answered {} with unexpected {other:?}", args[0]),
    }
}

fn read_reply(reader: &mut impl BufRead) -> anyhow::Result<Reply> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        bail!("connection closed");
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at_checked(1).context("empty reply line")?;
    Ok(match kind {
        "+" => Reply::Status(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Integer(rest.parse().context("bad integer reply")?),
        "$" => {
            let len: i64 = rest.parse().context("bad bulk length")?;
            if len < 0 {
                Reply::Bulk(None)
            } else {
                let mut bytes = vec![0; usize::try_from(len)? + 2];
                reader.read_exact(&mut bytes)?;
                bytes.truncate(bytes.len() - 2);
                Reply::Bulk(Some(bytes))
            }
        }
        "*" => {
            let len: i64 = rest.parse().context("bad array length")?;
            if len < 0 {
                Reply::Array(None)
            } else {
                let items = (0..len)
                    .map(|_| read_reply(reader))
                    .collect::<anyhow::Result<_>>()?;
                Reply::Array(Some(items))
            }
        }
        _ => bail!("unknown reply type in {line:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_replies() {
        let mut input: &[u8] = b"*3\r\n+OK\r\n$5\r\nhe\r\no\r\n*2\r\n:-7\r\n$-1\r\n";
        let reply = read_reply(&mut input).unwrap();
        assert_eq!(
            reply,
            Reply::Array(Some(vec![
                Reply::Status("OK".into()),
                Reply::Bulk(Some(b"he\r\no".to_vec())),
                Reply::Array(Some(vec![Reply::Integer(-7), Reply::Bulk(None)])),
            ]))
        );
    }
}
