//! How a table is declared, read and printed.
//!
//! [`table!`] declares a table's struct and, for every key in it, the key's
//! name, its default (or that it is required) and its converter; from that
//! one declaration it derives the struct, the list of known keys (for
//! unknown-key detection), the reader and the printer. Keys that need a
//! reader of their own (several keys that make one value, defaults that
//! depend on another key) are declared as `inputs` (read like the others,
//! but not fields of the struct) and turned into `computed` fields by the
//! table's module.
//!
//! Also here: the [`Section`] being read, the converters that lift a value
//! check to a key ([`Conv`], [`list`], [`list_at`], [`custom`]) and the
//! TOML printer ([`Toml`], [`Print`]). Uses `super` (the error collector)
//! and [`super::values`] only.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::convert::describe;
use super::values::{
    AddressPattern, AuthMethod, DomainPattern, Dur, IpFamily, OAuthFlow, Size, TlsMode,
};
use super::{Ctx, Reported};

/// A value of the document with its position.
pub(crate) type Item<'i> = Spanned<DeValue<'i>>;

/// One table of the document being read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Section<'t, 'i> {
    /// `server`, `policy`…; empty for the top level.
    pub name: &'static str,
    pub table: &'t DeTable<'i>,
    /// Where "missing key" errors point: the table's header.
    pub at: usize,
    /// Keys already reported as meaningless here; they read as absent so
    /// that their values are not complained about a second time.
    pub skip: &'static [&'static str],
}

impl<'t, 'i> Section<'t, 'i> {
    pub(crate) fn new(name: &'static str, table: &'t DeTable<'i>, at: usize) -> Self {
        Section {
            name,
            table,
            at,
            skip: &[],
        }
    }
    pub(crate) fn get(&self, key: &str) -> Option<&'t Item<'i>> {
        if self.skip.contains(&key) {
            return None;
        }
        self.table.get(key)
    }
    /// Where the value of `key` starts: for problems with the value.
    pub(crate) fn offset(&self, key: &str) -> Option<usize> {
        self.get(key).map(|i| i.span().start)
    }
    /// Where `key` itself starts: for problems between keys.
    pub(crate) fn key_offset(&self, key: &str) -> Option<usize> {
        self.table.get_key_value(key).map(|(k, _)| k.span().start)
    }
    /// The value of `key` as written, for messages that quote it: the text
    /// of a string, else the TOML source.
    pub(crate) fn written(&self, ctx: &Ctx, key: &str) -> Option<String> {
        let item = self.get(key)?;
        Some(match item.get_ref() {
            DeValue::String(s) => s.to_string(),
            _ => ctx.src.get(item.span())?.trim().to_string(),
        })
    }
}

/// Turns one TOML value into a `T`, reporting any problem at the value.
pub(crate) trait Conv<T> {
    /// Convert `item`, the value of `key`.
    fn conv(&self, ctx: &mut Ctx, key: &str, item: &Item) -> Result<T, Reported>;
}

/// A plain value check: its message is prefixed with the key.
impl<T, F: Fn(&DeValue) -> Result<T, String>> Conv<T> for F {
    fn conv(&self, ctx: &mut Ctx, key: &str, item: &Item) -> Result<T, Reported> {
        self(item.get_ref()).map_err(|m| ctx.error(item.span().start, format!("{key}: {m}")))
    }
}

/// Gives a closure the signature of a value check (so that its argument's
/// type need not be written out).
pub(crate) fn scalar<T, F: Fn(&DeValue) -> Result<T, String>>(f: F) -> F {
    f
}

/// See [`list_at`].
pub(crate) struct ListAt<F>(F);

/// A list whose elements are checked one by one; each bad element is
/// reported at its own position. The values come with their offsets.
pub(crate) fn list_at<T, F: Fn(&DeValue) -> Result<T, String>>(f: F) -> ListAt<F> {
    ListAt(f)
}

impl<T, F: Fn(&DeValue) -> Result<T, String>> Conv<Vec<(T, usize)>> for ListAt<F> {
    fn conv(&self, ctx: &mut Ctx, key: &str, item: &Item) -> Result<Vec<(T, usize)>, Reported> {
        let DeValue::Array(elems) = item.get_ref() else {
            let m = format!(
                "{key}: expected a list like [\"…\", \"…\"], found {}",
                describe(item.get_ref())
            );
            return Err(ctx.error(item.span().start, m));
        };
        let mut out = Vec::with_capacity(elems.len());
        let mut bad = false;
        for e in elems.iter() {
            match (self.0)(e.get_ref()) {
                Ok(v) => out.push((v, e.span().start)),
                Err(m) => {
                    ctx.error(e.span().start, format!("{key}: {m}"));
                    bad = true;
                }
            }
        }
        if bad { Err(Reported) } else { Ok(out) }
    }
}

/// See [`list`].
pub(crate) struct List<F>(F);

/// A list whose elements are checked one by one.
pub(crate) fn list<T, F: Fn(&DeValue) -> Result<T, String>>(f: F) -> List<F> {
    List(f)
}

impl<T, F: Fn(&DeValue) -> Result<T, String>> Conv<Vec<T>> for List<F> {
    fn conv(&self, ctx: &mut Ctx, key: &str, item: &Item) -> Result<Vec<T>, Reported> {
        ListAt(&self.0)
            .conv(ctx, key, item)
            .map(|v| v.into_iter().map(|(x, _)| x).collect())
    }
}

/// See [`custom`].
pub(crate) struct Custom<F>(F);

/// A converter that reports for itself (several messages, or positions
/// inside the value).
pub(crate) fn custom<T, F: Fn(&mut Ctx, &str, &Item) -> Result<T, Reported>>(f: F) -> Custom<F> {
    Custom(f)
}

impl<T, F: Fn(&mut Ctx, &str, &Item) -> Result<T, Reported>> Conv<T> for Custom<F> {
    fn conv(&self, ctx: &mut Ctx, key: &str, item: &Item) -> Result<T, Reported> {
        (self.0)(ctx, key, item)
    }
}

/// A list that must not be empty: `hint` follows "the list is empty; ".
pub(crate) fn non_empty<T, C: Conv<Vec<T>>>(
    hint: &'static str,
    conv: C,
) -> Custom<impl Fn(&mut Ctx, &str, &Item) -> Result<Vec<T>, Reported>> {
    Custom(move |ctx: &mut Ctx, key: &str, item: &Item| {
        let v = conv.conv(ctx, key, item)?;
        if v.is_empty() {
            return Err(ctx.error(
                item.span().start,
                format!("{key}: the list is empty; {hint}"),
            ));
        }
        Ok(v)
    })
}

/// See [`optional`].
pub(crate) struct Opt<C>(C);

impl<T, C: Conv<T>> Conv<Option<T>> for Opt<C> {
    fn conv(&self, ctx: &mut Ctx, key: &str, item: &Item) -> Result<Option<T>, Reported> {
        self.0.conv(ctx, key, item).map(Some)
    }
}

/// What a key is when it is not in the file.
enum Absent<T> {
    /// An error: the key must be there; the text is an example value.
    Required(&'static str),
    /// This value.
    Default(T),
    /// Worked out when needed (from the machine, say), or an error.
    From(fn(&mut Ctx) -> Result<T, Reported>),
}

/// How one key is read: what it is when absent, and its converter.
pub(crate) struct Spec<T, C> {
    absent: Absent<T>,
    conv: C,
}

/// A key that must be present; `example` is shown in the error.
pub(crate) fn required<T, C: Conv<T>>(example: &'static str, conv: C) -> Spec<T, C> {
    Spec {
        absent: Absent::Required(example),
        conv,
    }
}

/// A key with a default value.
pub(crate) fn default<T, C: Conv<T>>(value: T, conv: C) -> Spec<T, C> {
    Spec {
        absent: Absent::Default(value),
        conv,
    }
}

/// A key whose default is worked out by `f`, which reports its own errors.
pub(crate) fn default_from<T, C: Conv<T>>(
    f: fn(&mut Ctx) -> Result<T, Reported>,
    conv: C,
) -> Spec<T, C> {
    Spec {
        absent: Absent::From(f),
        conv,
    }
}

/// A key that may be absent (`None`).
pub(crate) fn optional<T, C: Conv<T>>(conv: C) -> Spec<Option<T>, Opt<C>> {
    Spec {
        absent: Absent::Default(None),
        conv: Opt(conv),
    }
}

impl<T, C: Conv<T>> Spec<T, C> {
    /// The value of `key` in `sec`, its default, or a reported problem.
    pub(crate) fn read(self, ctx: &mut Ctx, sec: &Section, key: &str) -> Result<T, Reported> {
        match sec.get(key) {
            Some(item) => self.conv.conv(ctx, key, item),
            None => match self.absent {
                Absent::Default(v) => Ok(v),
                Absent::From(f) => f(ctx),
                Absent::Required(example) => Err(ctx.error(
                    sec.at,
                    format!(
                        "missing required key '{key}' in [{}]; e.g. {key} = {example}",
                        sec.name
                    ),
                )),
            },
        }
    }
}

/// The name of a key: the field's, unless the declaration gives one.
#[doc(hidden)]
macro_rules! key_name {
    ($field:ident) => {
        stringify!($field)
    };
    ($field:ident $key:literal) => {
        $key
    };
}
pub(crate) use key_name;

/// Declares a table: see the module documentation of [`super`] for how to
/// add a key. Generates the struct (`pub` fields, with the docs given),
/// `KEYS` and `print_keys` on it, and a companion `$keys` struct holding
/// each key as read (`read`) that `build`s the table once the computed
/// fields are known.
macro_rules! table {
    (
        $(#[$meta:meta])*
        pub struct $name:ident, read as $keys:ident {
            $(
                $(#[$fmeta:meta])*
                $field:ident $(as $key:literal)? : $ty:ty = $spec:expr,
            )*
        }
        $(
            inputs {
                $(
                    $(#[$imeta:meta])*
                    $ifield:ident $(as $ikey:literal)? : $ity:ty = $ispec:expr,
                )*
            }
        )?
        $(
            computed {
                $(
                    $(#[$cmeta:meta])*
                    $cfield:ident : $cty:ty,
                )*
            }
        )?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
            $($( $(#[$cmeta])* pub $cfield: $cty, )*)?
        }

        /// Each key of the table as read, before the checks between keys.
        #[derive(Debug)]
        pub(crate) struct $keys {
            $( pub(crate) $field: Result<$ty, $crate::config::Reported>, )*
            $($( $(#[$imeta])* pub(crate) $ifield: Result<$ity, $crate::config::Reported>, )*)?
        }

        impl $keys {
            /// Read every key of the table; each problem is reported.
            pub(crate) fn read(
                ctx: &mut $crate::config::Ctx,
                sec: &$crate::config::schema::Section,
            ) -> Self {
                Self {
                    $( $field: ($spec).read(
                        ctx, sec, $crate::config::schema::key_name!($field $($key)?)), )*
                    $($( $ifield: ($ispec).read(
                        ctx, sec, $crate::config::schema::key_name!($ifield $($ikey)?)), )*)?
                }
            }

            /// The table, if every key and computed field is good.
            #[allow(clippy::too_many_arguments)]
            pub(crate) fn build(
                self,
                $($( $cfield: Result<$cty, $crate::config::Reported>, )*)?
            ) -> Result<$name, $crate::config::Reported> {
                Ok($name {
                    $( $field: self.$field?, )*
                    $($( $cfield: $cfield?, )*)?
                })
            }
        }

        impl $name {
            /// The table's keys, in declaration order.
            pub(crate) const KEYS: &'static [&'static str] = &[
                $( $crate::config::schema::key_name!($field $($key)?), )*
                $($( $crate::config::schema::key_name!($ifield $($ikey)?), )*)?
            ];

            /// Print the keys that are fields, in declaration order.
            pub(crate) fn print_keys(&self, out: &mut $crate::config::schema::Toml) {
                $( out.key($crate::config::schema::key_name!($field $($key)?), &self.$field); )*
            }
        }
    };
}
pub(crate) use table;

/// The effective configuration being printed.
#[derive(Debug, Default)]
pub(crate) struct Toml {
    out: String,
}

impl Toml {
    pub(crate) fn new(header: &str) -> Self {
        Toml {
            out: header.to_string(),
        }
    }
    /// `key = value`, unless the value is absent.
    pub(crate) fn key<P: Print + ?Sized>(&mut self, key: &str, value: &P) {
        if let Some(v) = value.toml() {
            self.line(key, &v);
        }
    }
    /// `key = value` with the value already in TOML.
    pub(crate) fn line(&mut self, key: &str, value: &str) {
        let _ = writeln!(self.out, "{key} = {value}");
    }
    /// A `[name]` (or `[[name]]`) header after a blank line.
    pub(crate) fn header(&mut self, header: &str) {
        let _ = write!(self.out, "\n{header}\n");
    }
    pub(crate) fn finish(self) -> String {
        self.out
    }
}

/// A value as `check --print` shows it: resolved, in TOML. `None` leaves
/// the key out (an optional key that is not set).
pub(crate) trait Print {
    fn toml(&self) -> Option<String>;
}

/// A TOML basic string.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Print for str {
    fn toml(&self) -> Option<String> {
        Some(quote(self))
    }
}

impl<T: Print> Print for Option<T> {
    fn toml(&self) -> Option<String> {
        self.as_ref().and_then(Print::toml)
    }
}

impl<T: Print> Print for Vec<T> {
    fn toml(&self) -> Option<String> {
        let parts: Vec<String> = self.iter().filter_map(Print::toml).collect();
        Some(format!("[{}]", parts.join(", ")))
    }
}

/// Printed as a quoted string of its `Display` form.
macro_rules! print_as_text {
    ($($t:ty),*) => {
        $(impl Print for $t {
            fn toml(&self) -> Option<String> {
                Some(quote(&self.to_string()))
            }
        })*
    };
}
print_as_text!(
    String,
    SocketAddr,
    IpNet,
    AddressPattern,
    DomainPattern,
    Dur
);

/// Printed bare (numbers, booleans).
macro_rules! print_bare {
    ($($t:ty),*) => {
        $(impl Print for $t {
            fn toml(&self) -> Option<String> {
                Some(self.to_string())
            }
        })*
    };
}
print_bare!(bool, u16, u32, u64, usize);

/// In bytes: the resolved value, whatever unit the file used.
impl Print for Size {
    fn toml(&self) -> Option<String> {
        Some(self.bytes.to_string())
    }
}

impl Print for PathBuf {
    fn toml(&self) -> Option<String> {
        Some(quote(&self.display().to_string()))
    }
}

/// The enumerations print their config spelling.
macro_rules! print_word {
    ($($t:ty),*) => {
        $(impl Print for $t {
            fn toml(&self) -> Option<String> {
                Some(quote(self.as_str()))
            }
        })*
    };
}
print_word!(TlsMode, IpFamily, AuthMethod, OAuthFlow);

impl Print for crate::smtp::BareNewline {
    fn toml(&self) -> Option<String> {
        let word = match self {
            crate::smtp::BareNewline::Reject => "reject",
            crate::smtp::BareNewline::Normalize => "normalize",
        };
        Some(quote(word))
    }
}
