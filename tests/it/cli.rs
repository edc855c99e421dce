//! The command line: help, version, check.

use std::process::Command;

use crate::util::bin;

#[test]
fn version_and_help() {
    let out = Command::new(bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("postern {}", env!("CARGO_PKG_VERSION"))
    );
    for args in [&["--help"][..], &["serve", "--help"], &["check", "--help"]] {
        let out = Command::new(bin()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage: postern"),
            "{args:?}"
        );
    }
    let out = Command::new(bin()).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown command 'frobnicate'"));
}

#[test]
fn check_accepts_the_shipped_config_and_prints_the_effective_one() {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/config/postern.toml");
    let out = Command::new(bin())
        .args(["check", "--config", cfg])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin())
        .args(["check", "--print", "--config", cfg])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // Resolved values: the size in bytes, not the file's "10MiB".
    assert!(text.contains("max_message_size = 10485760\n"), "{text}");
    assert!(text.contains("kind = \"maildir\""), "{text}");
}

#[test]
fn check_reports_every_problem_with_file_line_col() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "hostname = \"relay.lan\"\n\
         [server]\n\
         listen = [\"127.0.0.1:2525\"]\n\
         max_recipient = 5\n\
         max_message_size = \"ten megs\"\n\
         [policy]\n\
         allow_clients = [\"10.0.0.0/33\"]\n\
         [queue]\n\
         dir = \"q\"\n\
         [upstream]\n\
         kind = \"maildir\"\n\
         dir = \"out\"\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let p = path.display();
    assert!(
        err.contains(&format!("{p}:4:1: ")) && err.contains("did you mean 'max_recipients'"),
        "{err}"
    );
    assert!(err.contains(&format!("{p}:5:20: ")), "{err}");
    assert!(err.contains(&format!("{p}:7:18: ")), "{err}");
    assert_eq!(err.lines().count(), 3, "{err}");
}

#[test]
fn serve_with_a_missing_config_says_so() {
    let out = Command::new(bin())
        .args(["serve", "--config", "/nonexistent/postern.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("/nonexistent/postern.toml: cannot read config file")
    );
}

/// `postern --version | head -0`: stdout is a pipe nobody reads. Every
/// command that prints must end quietly, not panic on the broken pipe.
#[test]
fn closed_stdout_is_not_a_panic() {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/config/postern.toml");
    for args in [
        &["--version"][..],
        &["--help"],
        &["check", "--help"],
        &["check", "--print", "--config", cfg],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(bin())
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(out.status.success(), "{args:?}: {:?} {err}", out.status);
    }
}

/// `check` places a bad pattern at its FILE:LINE:COL; `filter test` says
/// what each rule makes of a message and exits 1 for a refusal.
#[test]
fn check_places_bad_patterns_and_filter_test_explains_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.toml");
    let base = "[server]\nlisten = [\"127.0.0.1:2525\"]\n[queue]\ndir = \"q\"\n\
                [upstream]\nkind = \"maildir\"\ndir = \"out\"\n";
    std::fs::write(
        &path,
        format!("{base}[[filter]]\nname = \"bad\"\nsubject = [\"/(unclosed/\"]\nhold = true\n"),
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:10:12: subject: \"/(unclosed/\" is not a valid regular expression",
            path.display()
        )),
        "{err}"
    );
    std::fs::write(
        &path,
        format!(
            "{base}[[filter]]\nname = \"ups\"\nsender = [\"*@ups.lan\"]\nhold = true\n\
             [[filter]]\nname = \"no-exe\"\nattachment_ext = [\"exe\"]\n\
             reject = \"550 5.7.1 Executables are not accepted here\"\n"
        ),
    )
    .unwrap();
    let msg = dir.path().join("m.eml");
    std::fs::write(
        &msg,
        "Subject: tools\nContent-Type: multipart/mixed; boundary=x\n\n--x\n\
         Content-Disposition: attachment; filename=\"setup.EXE\"\n\nMZ\n--x--\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["filter", "test", "--config"])
        .arg(&path)
        .args(["--from", "apc@ups.lan", "--to", "ops@example.com"])
        .arg(&msg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text,
        "rule \"ups\" (decides at MAIL): MATCH\n\
         rule \"no-exe\" (decides at end of data): MATCH\n\
         outcome: refused by \"no-exe\": 550 5.7.1 Executables are not accepted here\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1));
}
