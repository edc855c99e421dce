//! `[[filter]]` and `[storm]`: reading, the checks between keys, pattern
//! errors at their FILE:LINE:COL, and printing.

use super::*;

const ROUTES: &str = "\
[server]
listen = [\"127.0.0.1:2525\"]
[queue]
dir = \"q\"
[[route]]
name = \"m365\"
domains = [\"example.com\"]
kind = \"maildir\"
dir = \"out1\"
[[route]]
domains = [\"*\"]
kind = \"maildir\"
dir = \"out2\"
";

#[test]
fn rules_read_in_order_with_their_conditions_and_actions() {
    let c = ok(&format!(
        "{ROUTES}[[filter]]\nname = \"exe\"\nattachment_ext = [\".EXE\", \"js\"]\n\
         reject = \"550 5.7.1 No executables\"\n\
         [[filter]]\nname = \"ups\"\nsender = [\"*@ups.lan\"]\nsubject = [\"/on battery/i\"]\n\
         header = [\"X-Mailer: APC*\"]\nroute = \"m365\"\nhold = true\nadd_header = [\"X-Alert: ups\"]\n"
    ));
    assert_eq!(c.filters.len(), 2);
    let exe = &c.filters[0];
    assert_eq!(exe.name, "exe");
    assert_eq!(
        exe.attachment_ext,
        vec![Extension("exe".into()), Extension("js".into())]
    );
    assert_eq!(exe.reject.as_ref().unwrap().code, 550);
    let ups = &c.filters[1];
    assert!(ups.sender[0].matches("Battery@UPS.LAN"));
    assert!(ups.subject[0].matches("UPS 1: ON BATTERY"));
    assert_eq!(ups.header[0].name, "X-Mailer");
    assert_eq!(ups.route.as_deref(), Some("m365"));
    assert!(ups.hold);
    assert_eq!(c.outbound.routes[0].name.as_deref(), Some("m365"));
    assert!(c.storm.is_none(), "storm suppression is off by default");
}

#[test]
fn a_bad_regex_is_reported_at_its_own_position() {
    let text =
        format!("{BASE}[[filter]]\nname = \"x\"\nsubject = [\"ok*\", \"/a(b/\"]\ndiscard = true\n");
    let m = one_error(&text, 10, 19);
    assert!(
        m.starts_with("subject: \"/a(b/\" is not a valid regular expression"),
        "{m}"
    );
}

#[test]
fn checks_between_a_rules_keys() {
    // No action.
    let m = one_error(
        &format!("{BASE}[[filter]]\nname = \"x\"\nsender = [\"a*\"]\n"),
        8,
        1,
    );
    assert!(m.contains("does nothing"), "{m}");
    // reject with another action.
    let m = one_error(
        &format!("{BASE}[[filter]]\nname = \"x\"\nreject = \"550 no\"\nhold = true\n"),
        11,
        1,
    );
    assert!(m.contains("hold means nothing with reject"), "{m}");
    // A header change that would come too late.
    let m = one_error(
        &format!(
            "{BASE}[[filter]]\nname = \"x\"\nsize_over = \"1MiB\"\nadd_header = [\"X-Big: yes\"]\n"
        ),
        11,
        1,
    );
    assert!(m.contains("add_header cannot follow size_over"), "{m}");
    // A route that has no such name.
    let m = one_error(
        &format!("{ROUTES}[[filter]]\nname = \"x\"\nroute = \"gmail\"\n"),
        16,
        9,
    );
    assert_eq!(
        m,
        "route: no [[route]] is named \"gmail\"; the named routes are: m365"
    );
    // Two rules of one name.
    let m = one_error(
        &format!(
            "{BASE}[[filter]]\nname = \"x\"\nhold = true\n[[filter]]\nname = \"x\"\nhold = true\n"
        ),
        12,
        8,
    );
    assert!(m.contains("defined already"), "{m}");
    // A field name with a space.
    let m = one_error(
        &format!("{BASE}[[filter]]\nname = \"x\"\nremove_header = [\"X Bad\"]\n"),
        10,
        18,
    );
    assert!(
        m.starts_with("remove_header: the field name contains ' '"),
        "{m}"
    );
}

#[test]
fn storm_defaults_and_bounds() {
    let c = ok(&format!("{BASE}[storm]\n"));
    let s = c.storm.unwrap();
    assert_eq!((s.threshold, s.pass, s.max_keys), (5, 2, 256));
    assert_eq!(s.window, Dur::new(Duration::from_secs(1800)));
    assert_eq!(s.key, StormKey::SenderSubject);
    let m = one_error(&format!("{BASE}[storm]\nthreshold = 3\npass = 4\n"), 10, 1);
    assert!(m.starts_with("pass (4) is above threshold (3)"), "{m}");
    let m = one_error(&format!("{BASE}[storm]\nkey = \"from\"\n"), 9, 7);
    assert!(m.contains("not a storm key"), "{m}");
    let c = ok(&format!("{BASE}[storm]\nwindow = \"10s\"\n"));
    assert_eq!(c.storm.unwrap().window, Dur::new(Duration::from_secs(10)));
    let m = one_error(&format!("{BASE}[storm]\nwindow = \"5s\"\n"), 9, 10);
    assert!(m.contains("window"), "{m}");
}

#[test]
fn filters_and_storm_print_and_read_back() {
    let c = ok(&format!(
        "{ROUTES}[[filter]]\nname = \"ups\"\nclient = [\"192.168.1.0/24\"]\nsender = [\"*@ups.lan\"]\n\
         subject = [\"/^UPS/i\"]\nroute = \"m365\"\nremove_header = [\"X-Ip\"]\n\
         redirect = [\"ops@example.com\"]\n[storm]\nwindow = \"1h\"\nsenders = [\"*@ups.lan\"]\n"
    ));
    let printed = c.to_toml();
    assert!(
        printed.contains("[[filter]]\nname = \"ups\"\n"),
        "{printed}"
    );
    assert!(printed.contains("subject = [\"/^UPS/i\"]"), "{printed}");
    assert!(printed.contains("[storm]\nwindow = \"1h\"\n"), "{printed}");
    let again = ok(&printed);
    assert_eq!(again.filters[0].subject, c.filters[0].subject);
    assert_eq!(again.filters[0].redirect, c.filters[0].redirect);
    assert_eq!(again.storm.unwrap().window, c.storm.unwrap().window);
}
