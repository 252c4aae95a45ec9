//! moto, the stack's one child process: started on a port checked free first, waited for until it answers
//! (or reported with its log if it exits), and tied to the stack's life so that it ends with the stack even
//! when the stack crashes or is killed with SIGKILL.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::ports;
use crate::resources::BoxError;
use crate::settings::LocalSettings;

/// moto behind a server that keeps connections alive and sets TCP_NODELAY (see the script's docstring),
/// run by the virtualenv's Python; embedded so the binary runs from any directory.
const MOTO_LAUNCHER: &str = include_str!("../moto_server.py");

const READY_WITHIN: Duration = Duration::from_secs(30);
/// Lines of moto's log quoted when it exits early.
const LOG_TAIL_LINES: usize = 20;

pub async fn start(local: &LocalSettings) -> Result<Child, BoxError> {
    // moto's own bind failure would go unnoticed while a stale moto on the port answered the probe.
    ports::ensure_free(&local.host, local.moto_port, "GATEWAY_LOCAL_MOTO_PORT")?;
    let log_path = local.dir.join("moto.log");
    let log = std::fs::File::create(&log_path)?;
    let port = local.moto_port.to_string();
    let (program, launcher) = match &local.moto_bin {
        Some(bin) => (bin.as_str(), format!("{bin} -H {} -p {port}", local.host)),
        None => (
            local.python.as_str(),
            format!("{} -c <local/moto_server.py>", local.python),
        ),
    };
    let mut command = Command::new(program);
    match &local.moto_bin {
        Some(_) => command.args(["-H", &local.host, "-p", &port]),
        None => command.args(["-c", MOTO_LAUNCHER, &local.host, &port]),
    };
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    end_with_parent(&mut command);
    let mut child = command.spawn().map_err(|e| {
        format!("could not start moto ({launcher}): {e}; run ./local/run.sh, which installs it")
    })?;
    let url = format!("{}/moto-api/", local.aws_endpoint());
    // On an error the child is dropped, and killed (kill_on_drop).
    wait_until_ready(&mut child, &url, &log_path, READY_WITHIN).await?;
    Ok(child)
}

/// Polls `url` until it answers 2xx; fails if the child exits first (quoting the end of its log) or after
/// `within`.
async fn wait_until_ready(
    child: &mut Child,
    url: &str,
    log_path: &Path,
    within: Duration,
) -> Result<(), BoxError> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(format!(
                "moto exited before it answered on {url} ({status}); the end of {}:\n{}",
                log_path.display(),
                log_tail(log_path)
            )
            .into());
        }
        if let Ok(response) = http.get(url).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        if started.elapsed() >= within {
            return Err(format!(
                "moto did not answer on {url} within {} s (see {})",
                within.as_secs(),
                log_path.display()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log_tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(error) => format!("(unreadable: {error})"),
    }
}

/// Asks the kernel to send the child SIGTERM when the stack dies, however it dies (`kill_on_drop` only
/// covers an orderly exit). Linux sends it when the *thread* that spawned the child ends: `start` runs on
/// the main task, which `#[tokio::main]` polls on the main thread, so that is when the process ends.
#[cfg(target_os = "linux")]
fn end_with_parent(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec; it calls only async-signal-safe
    // functions (prctl, getppid) and builds its error without allocating.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // The stack may have died between fork and prctl, in which case no signal will come.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Elsewhere only `kill_on_drop` (orderly exits) applies.
#[cfg(not(target_os = "linux"))]
fn end_with_parent(_command: &mut Command) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "gateway-local-moto-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn a_child_that_exits_early_is_reported_with_its_log() {
        let dir = scratch_dir();
        let log_path = dir.join("moto.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new("sh")
            .args([
                "-c",
                "echo starting; echo 'OSError: [Errno 98] Address already in use' >&2; exit 3",
            ])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // Nothing listens on port 9 (discard) here: only the exit can end the wait early.
        let started = Instant::now();
        let error = wait_until_ready(
            &mut child,
            "http://127.0.0.1:9/moto-api/",
            &log_path,
            Duration::from_secs(20),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(started.elapsed() < Duration::from_secs(10), "{error}");
        assert!(
            error.starts_with("moto exited before it answered"),
            "{error}"
        );
        assert!(error.contains("exit status: 3"), "{error}");
        assert!(
            error.contains("starting\nOSError: [Errno 98] Address already in use"),
            "{error}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = scratch_dir();
        let path = dir.join("moto.log");
        let text: Vec<String> = (1..=30).map(|n| format!("line {n}")).collect();
        std::fs::write(&path, text.join("\n")).unwrap();
        let tail = log_tail(&path);
        assert!(tail.starts_with("line 11\n"), "{tail}");
        assert!(tail.ends_with("line 30"), "{tail}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The child's state letter from /proc (`Z`: exited, not yet reaped), or None once it is gone.
    #[cfg(target_os = "linux")]
    fn process_state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.chars().next()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_child_ends_when_the_thread_that_started_it_ends() {
        // The kernel signals the child when the spawning thread ends, so a short-lived thread stands in
        // for a killed stack; kill_on_drop is off and the handle leaked, so only the death signal is left.
        let pid = std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut command = Command::new("sleep");
                command.arg("60").kill_on_drop(false);
                end_with_parent(&mut command);
                let child = command.spawn().unwrap();
                let pid = child.id().unwrap();
                std::mem::forget(child);
                pid
            })
        })
        .join()
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !matches!(process_state(pid), None | Some('Z')) {
            assert!(
                Instant::now() < deadline,
                "sleep ({pid}) outlived the thread that started it"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Reap it (it is this process's child) and check that SIGTERM is what ended it.
        let pid = libc::pid_t::try_from(pid).unwrap();
        let mut status = 0;
        // SAFETY: waitpid on this process's own child, with a valid pointer for the status.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            assert!(libc::WIFSIGNALED(status), "status {status}");
            assert_eq!(libc::WTERMSIG(status), libc::SIGTERM);
        }
    }
}
