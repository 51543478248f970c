//! One long-lived thread that forks every store process.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process.
//! Test threads come and go, so children are forked from this thread instead, which lives until
//! the process ends: then, and only then, every child gets its death signal.

use std::io;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::thread;

use nix::sys::signal::Signal;

use crate::sys::{self, ExecHook};

struct Request {
    cmd: Command,
    death_signal: Signal,
    reply: mpsc::SyncSender<io::Result<Child>>,
}

/// Spawns `cmd` from the spawner thread; the child gets `death_signal` when this process dies.
pub(crate) fn spawn(cmd: Command, death_signal: Signal) -> io::Result<Child> {
    let (reply, response) = mpsc::sync_channel(1);
    let request = Request {
        cmd,
        death_signal,
        reply,
    };
    sender()
        .send(request)
        .map_err(|_| io::Error::other("the testkit spawner thread is gone"))?;
    response
        .recv()
        .map_err(|_| io::Error::other("the testkit spawner thread dropped a request"))?
}

fn sender() -> &'static mpsc::Sender<Request> {
    static SENDER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    SENDER.get_or_init(|| {
        let (sender, requests) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("shardfeed-testkit-spawner".into())
            .spawn(move || {
                // The sender lives in a static, so this loop never ends and the thread never
                // exits before the process does.
                for mut request in requests {
                    sys::set_exec_hook(
                        &mut request.cmd,
                        ExecHook::DieWithParent(request.death_signal),
                    );
                    let _ = request.reply.send(request.cmd.spawn());
                }
            })
            .expect("starting the testkit spawner thread");
        sender
    })
}
