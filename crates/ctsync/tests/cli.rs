//! The promise of clear errors: every class of config and CLI error gives one line that
//! names the file, the line where there is one, and what was expected, and nothing
//! starts. These need no root: the checks happen before any socket is opened.

#![allow(clippy::panic, clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("ctsync-cli-{name}-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn key(&self, mode: u32) -> PathBuf {
        let p = self.0.join("cluster.key");
        fs::write(&p, "00".repeat(32) + "\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn config(&self, text: &str) -> PathBuf {
        let p = self.0.join("ctsync.toml");
        fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn good(key: &Path) -> String {
    format!(
        "node = \"fw1\"\n[sync]\ninterface = \"lo\"\nlocal = \"198.18.0.1:3780\"\npeers = [\"198.18.0.2:3780\"]\nkey_file = \"{}\"\n[control]\nsocket = \"/nonexistent/ctsync.sock\"\n",
        key.display()
    )
}

/// Run `ctsync ARGS`: it must fail with exactly one line on stderr, which is returned.
fn fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ctsync"))
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{args:?} succeeded: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: one line expected, got:\n{err}"
    );
    err
}

fn run_fails(cfg: &Path) -> String {
    fails(&["run", "--config", cfg.to_str().unwrap()])
}

#[test]
fn an_unknown_key_names_file_line_and_key() {
    let d = Dir::new("unknown");
    let key = d.key(0o600);
    let cfg = d.config(&good(&key).replace("[control]\n", "[control]\nsokcet = \"x\"\n"));
    let e = run_fails(&cfg);
    assert!(e.contains(&format!("{}:8:", cfg.display())), "{e}");
    assert!(e.contains("sokcet") && e.contains("expected"), "{e}");
}

#[test]
fn a_bad_address_names_file_and_line() {
    let d = Dir::new("addr");
    let key = d.key(0o600);
    let cfg = d.config(&good(&key).replace("198.18.0.2:3780", "198.18.0.256:3780"));
    let e = run_fails(&cfg);
    assert!(e.contains(&format!("{}:5:", cfg.display())), "{e}");
    let cfg = d.config(&good(&key).replace("198.18.0.1:3780", "198.18.0.1"));
    let e = run_fails(&cfg);
    assert!(e.contains(&format!("{}:4:", cfg.display())), "{e}");
}

#[test]
fn a_missing_key_file_says_how_to_make_one() {
    let d = Dir::new("nokey");
    let cfg = d.config(&good(&d.0.join("missing.key")));
    let e = run_fails(&cfg);
    assert!(e.contains(&format!("{}:6:", cfg.display())), "{e}");
    assert!(e.contains("ctsync keygen"), "{e}");
}

#[test]
fn a_world_readable_key_file_is_refused() {
    let d = Dir::new("openkey");
    let key = d.key(0o644);
    let e = run_fails(&d.config(&good(&key)));
    assert!(e.contains("chmod 600") && e.contains(":6:"), "{e}");
}

#[test]
fn a_malformed_key_file_is_refused() {
    let d = Dir::new("badkey");
    let key = d.key(0o600);
    fs::write(&key, "not a key\n").unwrap();
    let e = run_fails(&d.config(&good(&key)));
    assert!(e.contains("64 hex digits"), "{e}");
}

#[test]
fn an_unknown_interface_is_named() {
    let d = Dir::new("iface");
    let key = d.key(0o600);
    let cfg = d.config(&good(&key).replace("\"lo\"", "\"eth-nope\""));
    let e = run_fails(&cfg);
    assert!(
        e.contains(&format!("{}:3:", cfg.display()))
            && e.contains("eth-nope")
            && e.contains("does not exist"),
        "{e}"
    );
}

#[test]
fn an_unknown_network_namespace_is_named() {
    let d = Dir::new("netns");
    let key = d.key(0o600);
    let cfg = d.config(&format!("netns = \"ctsync-no-such-ns\"\n{}", good(&key)));
    let e = run_fails(&cfg);
    assert!(e.contains(":1:") && e.contains("ctsync-no-such-ns"), "{e}");
}

#[test]
fn broken_toml_and_bad_values_name_the_line() {
    let d = Dir::new("toml");
    let key = d.key(0o600);
    let e = run_fails(&d.config(&good(&key).replace("node = \"fw1\"", "node = \"fw1")));
    assert!(e.contains(":1:"), "{e}");
    let e = run_fails(&d.config(&format!(
        "{}[filter]\nprotocols = [\"tcp\", \"tcpp\"]\n",
        good(&key)
    )));
    assert!(e.contains(":10:") && e.contains("tcpp"), "{e}");
    let e = run_fails(&d.config(&format!(
        "{}[filter]\naddresses = [\"198.18.0.0/33\"]\n",
        good(&key)
    )));
    assert!(e.contains(":10:") && e.contains("198.18.0.0/33"), "{e}");
    let e = run_fails(&d.config(&format!(
        "{}[timers]\nalive_ms = 500\ndead_ms = 100\n",
        good(&key)
    )));
    assert!(e.contains(":11:") && e.contains("dead_ms"), "{e}");
    let e = run_fails(&d.config(&format!("{}[metrics]\nlisten = \"nowhere\"\n", good(&key))));
    assert!(e.contains(":10:"), "{e}");
    let e = run_fails(
        &d.config(
            &good(&key)
                .replace("mode", "x")
                .replace("key_file", "mode = \"warm\"\nkey_file"),
        ),
    );
    assert!(e.contains(":6:") && e.contains("warm"), "{e}");
}

#[test]
fn a_missing_config_file_is_one_line() {
    let e = fails(&["run", "--config", "/nonexistent/ctsync.toml"]);
    assert!(e.contains("/nonexistent/ctsync.toml"), "{e}");
}

#[test]
fn no_daemon_running_is_one_clear_line() {
    for args in [
        &["status", "--socket", "/nonexistent/ctsync.sock"][..],
        &["role", "primary", "--socket", "/nonexistent/ctsync.sock"],
        &["dump", "internal", "--socket", "/nonexistent/ctsync.sock"],
        &["commit", "--socket", "/nonexistent/ctsync.sock"],
    ] {
        let e = fails(args);
        assert!(
            e.contains("/nonexistent/ctsync.sock") && e.contains("is `ctsync run` running?"),
            "{e}"
        );
    }
}

#[test]
fn the_socket_path_comes_from_the_config() {
    let d = Dir::new("sockcfg");
    let key = d.key(0o600);
    let cfg = d.config(&good(&key));
    let e = fails(&["status", "--config", cfg.to_str().unwrap()]);
    assert!(e.contains("/nonexistent/ctsync.sock"), "{e}");
}

#[test]
fn a_bad_role_is_refused_with_the_choices() {
    let out = Command::new(env!("CARGO_BIN_EXE_ctsync"))
        .args(["role", "boss", "--socket", "/nonexistent"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("primary") && err.contains("backup") && err.contains("fault"),
        "{err}"
    );
}

#[test]
fn the_role_is_read_in_any_case_and_sent_by_its_name() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    let d = Dir::new("role");
    let sock = d.0.join("ctsync.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    // A stand-in daemon: it answers two requests and hands back what it was asked.
    let daemon = std::thread::spawn(move || {
        let mut asked = Vec::new();
        for _ in 0..3 {
            let (s, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            let role = line.trim().strip_prefix("role ").unwrap_or("?").to_string();
            writeln!(&s, "{{\"role\":\"{role}\"}}").unwrap();
            asked.push(line);
        }
        asked
    });
    for word in ["BACKUP", "Fault", "MASTER"] {
        let out = Command::new(env!("CARGO_BIN_EXE_ctsync"))
            .args(["role", word, "--socket", sock.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{word}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        daemon.join().unwrap(),
        ["role backup\n", "role fault\n", "role primary\n"]
    );
}

/// `ctsync generate` (what the package is built with): a man page per visible command,
/// none for hidden ones, and the three shells' completions.
#[test]
fn generate_writes_man_pages_and_completions() {
    let d = Dir::new("generate");
    for what in ["man", "completions"] {
        let out = Command::new(env!("CARGO_BIN_EXE_ctsync"))
            .args(["generate", what, d.0.join(what).to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let man = d.0.join("man");
    for page in ["ctsync.8", "ctsync-run.8", "ctsync-load-fill.8"] {
        let text = fs::read_to_string(man.join(page)).unwrap();
        assert!(text.starts_with(".ie") && text.contains(".TH "), "{page}");
    }
    assert!(
        fs::read_to_string(man.join("ctsync-run.8"))
            .unwrap()
            .contains("config")
    );
    for hidden in [
        "ctsync-generate.8",
        "ctsync-bench-sessions.8",
        "ctsync-help.8",
    ] {
        assert!(!man.join(hidden).exists(), "{hidden} written");
    }
    for file in ["ctsync.bash", "_ctsync", "ctsync.fish"] {
        let text = fs::read_to_string(d.0.join("completions").join(file)).unwrap();
        assert!(text.contains("keygen"), "{file}");
    }
}
