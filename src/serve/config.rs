//! Probe modules: how `/probe?module=NAME` probes, read from a TOML file without I/O of its own.
//!
//! A module names an engine, a probe order, our ident line, a source address and the timeouts, as
//! blackbox_exporter's modules do. The module `default` always exists (the settings of `sshprobe
//! probe`); a config file may redefine it and add others:
//!
//! ```toml
//! [modules.default]
//! connect_timeout = "3s"
//! banner_timeout = "8s"        # longer than Debian's 5 s TCP-wrappers delay
//!
//! [modules.send_first]
//! order = "send_first"         # speak first, as OpenSSH's ssh does: a silent refusal is an RST
//! ident = "SSH-2.0-monitor"
//! source = "127.0.0.2"
//!
//! [modules.raw]
//! engine = "raw"               # packet-level engine: needs root (CAP_NET_RAW, CAP_NET_ADMIN)
//!
//! [modules.kex]
//! kex = true                   # also read the server's KEXINIT: strict KEX, Terrapin, post-quantum
//! ```

use crate::engine::{
    ident_line, EngineConfig, ProbeRequest, DEFAULT_BANNER_TIMEOUT, DEFAULT_BYTE_CAP,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDENT,
};
use crate::evidence::{CloseMode, ProbeOrder};
use crate::ident::MAX_IDENT_LINE;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The module a scrape without `module=` uses.
pub(crate) const DEFAULT_MODULE: &str = "default";

/// Which engine a module probes with: the library's one [`EngineKind`], spelt `connect` or `raw`.
pub use crate::engine::any::EngineKind;

/// [`ProbeOrder`] as the config file spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum OrderName {
    #[default]
    WaitForBanner,
    SendFirst,
}

/// [`CloseMode`] as the config file spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CloseName {
    #[default]
    Fin,
    Rst,
}

/// One module as written in the file: every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModuleText {
    #[serde(default)]
    engine: EngineKind,
    #[serde(default)]
    order: OrderName,
    ident: Option<String>,
    source: Option<IpAddr>,
    connect_timeout: Option<String>,
    banner_timeout: Option<String>,
    #[serde(default)]
    close: CloseName,
    #[serde(default)]
    kex: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigText {
    #[serde(default)]
    modules: BTreeMap<String, ModuleText>,
}

/// How one module probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Its name, as `module=` gives it.
    pub name: String,
    /// The engine.
    pub engine: EngineKind,
    /// Which side speaks first.
    pub order: ProbeOrder,
    /// Our identification line, without CR LF.
    pub ident: String,
    /// The local address to probe from, or the kernel's choice.
    pub source: Option<IpAddr>,
    /// The longest the TCP handshake may take.
    pub connect_timeout: Duration,
    /// The longest the server's ident may take after the handshake.
    pub banner_timeout: Duration,
    /// How the probe closes.
    pub close: CloseMode,
    /// Whether the probe also reads the server's KEXINIT (`kex = true`).
    pub kex: bool,
}

impl Module {
    /// The module `default`: kernel sockets, wait for the banner, 3 s to connect, 8 s for the banner
    /// (longer than Debian's 5 s TCP-wrappers delay, so a wrappers denial shows as a close, not a
    /// timeout, when the scrape timeout allows).
    pub(crate) fn default_module() -> Module {
        Module {
            name: DEFAULT_MODULE.to_string(),
            engine: EngineKind::Connect,
            order: ProbeOrder::WaitForBanner,
            ident: DEFAULT_IDENT.to_string(),
            source: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            banner_timeout: DEFAULT_BANNER_TIMEOUT,
            close: CloseMode::Fin,
            kex: false,
        }
    }

    /// What the module's engine shares between its probes: the byte cap and how it closes.
    pub(crate) fn engine_config(&self) -> EngineConfig {
        EngineConfig { byte_cap: DEFAULT_BYTE_CAP, close: self.close, ..EngineConfig::default() }
    }

    /// The request for one probe of `remote` that must end within `deadline` (from the scrape's
    /// timeout), or within the module's own timeouts when there is none. A deadline shorter than
    /// the two timeouts together is shared between them in their proportion (3 s : 8 s by default,
    /// so a 0.75 s deadline gives 0.2 s to connect and 0.55 s for the banner): the probe's total
    /// time never exceeds the deadline, and neither phase is left with nothing.
    pub fn request(&self, remote: SocketAddr, deadline: Option<Duration>) -> ProbeRequest {
        let total = self.connect_timeout + self.banner_timeout;
        let (connect_timeout, banner_timeout) = match deadline {
            Some(d) if d < total => {
                let connect = d.mul_f64(self.connect_timeout.as_secs_f64() / total.as_secs_f64());
                (connect, d.saturating_sub(connect))
            }
            _ => (self.connect_timeout, self.banner_timeout),
        };
        ProbeRequest::new(remote)
            .source(self.source)
            .order(self.order)
            .ident(ident_line(&self.ident))
            .timeouts(connect_timeout, banner_timeout)
            .kex(self.kex)
    }
}

/// The modules of a running exporter, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modules {
    by_name: BTreeMap<String, Module>,
}

impl Default for Modules {
    fn default() -> Modules {
        let mut by_name = BTreeMap::new();
        by_name.insert(DEFAULT_MODULE.to_string(), Module::default_module());
        Modules { by_name }
    }
}

/// A config file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not TOML, or not the expected tables and keys.
    #[error("{0}")]
    Syntax(String),
    /// A module name that would need escaping in a URL or a label.
    #[error("module name {0:?}: use letters, digits, '_' and '-' only (at most 64)")]
    Name(String),
    /// A timeout that does not parse or is zero.
    #[error("module {module}: {key} {value:?}: {reason}")]
    Timeout {
        /// The module.
        module: String,
        /// `connect_timeout` or `banner_timeout`.
        key: &'static str,
        /// As written.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// An ident line the exchange cannot carry.
    #[error("module {module}: ident {ident:?}: {reason}")]
    Ident {
        /// The module.
        module: String,
        /// As written.
        ident: String,
        /// What is wrong.
        reason: &'static str,
    },
}

impl Modules {
    /// Parses a config file's text: its modules, over the built-in `default`.
    pub fn from_toml(text: &str) -> Result<Modules, ConfigError> {
        let parsed: ConfigText = toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        let mut modules = Modules::default();
        for (name, m) in parsed.modules {
            let module = module_from_text(&name, m)?;
            modules.by_name.insert(name, module);
        }
        Ok(modules)
    }

    /// The module called `name`.
    pub fn get(&self, name: &str) -> Option<&Module> {
        self.by_name.get(name)
    }

    /// Every module, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Module> {
        self.by_name.values()
    }

    /// Whether some module uses the raw engine (which then runs for the exporter's lifetime).
    pub(crate) fn need_raw(&self) -> bool {
        self.iter().any(|m| m.engine == EngineKind::Raw)
    }
}

fn module_from_text(name: &str, m: ModuleText) -> Result<Module, ConfigError> {
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid_name {
        return Err(ConfigError::Name(name.to_string()));
    }
    let defaults = Module::default_module();
    let timeout = |key: &'static str, value: Option<String>, default: Duration| match value {
        None => Ok(default),
        Some(text) => match humantime::parse_duration(&text) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err(ConfigError::Timeout {
                module: name.to_string(),
                key,
                value: text,
                reason: "must be more than zero".into(),
            }),
            Err(e) => Err(ConfigError::Timeout {
                module: name.to_string(),
                key,
                value: text,
                reason: e.to_string(),
            }),
        },
    };
    let ident = m.ident.unwrap_or(defaults.ident);
    if let Some(reason) = ident_problem(&ident) {
        return Err(ConfigError::Ident { module: name.to_string(), ident, reason });
    }
    Ok(Module {
        name: name.to_string(),
        engine: m.engine,
        order: match m.order {
            OrderName::WaitForBanner => ProbeOrder::WaitForBanner,
            OrderName::SendFirst => ProbeOrder::SendFirst,
        },
        ident,
        source: m.source,
        connect_timeout: timeout("connect_timeout", m.connect_timeout, defaults.connect_timeout)?,
        banner_timeout: timeout("banner_timeout", m.banner_timeout, defaults.banner_timeout)?,
        close: match m.close {
            CloseName::Fin => CloseMode::Fin,
            CloseName::Rst => CloseMode::Rst,
        },
        kex: m.kex,
    })
}

/// What makes `ident` unusable as our identification line, if anything (RFC 4253 §4.2, docs/facts.md §1).
fn ident_problem(ident: &str) -> Option<&'static str> {
    if ident.contains(['\r', '\n', '\0']) {
        Some("must be one line without CR, LF or NUL")
    } else if !(ident.starts_with("SSH-2.0-") || ident.starts_with("SSH-1.99-")) {
        Some("must start with SSH-2.0-")
    } else if ident.len() + 2 > MAX_IDENT_LINE {
        Some("longer than the 255 bytes RFC 4253 allows with CR LF")
    } else if ident.len() + 2 >= 128 {
        Some("128 bytes or more with CR LF: libssh servers reject it")
    } else {
        let software = ident.splitn(3, '-').nth(2).unwrap_or("");
        if software.starts_with("Probe-") || ident.contains("SSH_Version_Mapper") {
            Some("sshd closes silently on scanner idents (Probe-*, SSH_Version_Mapper)")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_module_exists_without_a_file() {
        let m = Modules::default();
        assert_eq!(m.get(DEFAULT_MODULE), Some(&Module::default_module()));
        assert!(!m.need_raw());
    }

    #[test]
    fn modules_from_toml() {
        let m = Modules::from_toml(
            r#"
            [modules.default]
            banner_timeout = "6s"
            [modules.first]
            order = "send_first"
            ident = "SSH-2.0-monitor"
            source = "127.0.0.2"
            connect_timeout = "500ms"
            close = "rst"
            [modules.wire]
            engine = "raw"
            "#,
        )
        .unwrap();
        assert_eq!(m.get("default").unwrap().banner_timeout, Duration::from_secs(6));
        let first = m.get("first").unwrap();
        assert_eq!(first.order, ProbeOrder::SendFirst);
        assert_eq!(first.ident, "SSH-2.0-monitor");
        assert_eq!(first.source, Some(IpAddr::from([127, 0, 0, 2])));
        assert_eq!(first.connect_timeout, Duration::from_millis(500));
        assert_eq!(first.close, CloseMode::Rst);
        assert!(m.need_raw());
    }

    #[test]
    fn bad_configs_name_what_is_wrong() {
        let err = |text: &str| Modules::from_toml(text).unwrap_err().to_string();
        assert!(err("[modules.a]\nordr = \"send_first\"").contains("ordr"));
        assert!(err("[modules.a]\norder = \"sideways\"").contains("sideways"));
        assert!(err("[modules.a]\nconnect_timeout = \"soon\"").contains("connect_timeout"));
        assert!(err("[modules.a]\nbanner_timeout = \"0s\"").contains("more than zero"));
        assert!(err("[modules.a]\nident = \"hello\"").contains("SSH-2.0-"));
        assert!(err("[modules.a]\nident = \"SSH-2.0-Probe-x\"").contains("scanner"));
        assert!(err("[modules.\"a b\"]").contains("letters"));
        assert!(err("not toml [").contains("TOML") || !err("not toml [").is_empty());
    }

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 22))
    }

    #[test]
    fn deadlines_split_between_connect_and_banner() {
        let m = Module::default_module();
        let c = m.request(addr(), None);
        assert_eq!((c.connect_timeout, c.banner_timeout), (m.connect_timeout, m.banner_timeout));
        let c = m.request(addr(), Some(Duration::from_millis(5500)));
        assert_eq!(
            (c.connect_timeout, c.banner_timeout),
            (Duration::from_millis(1500), Duration::from_secs(4))
        );
        let c = m.request(addr(), Some(Duration::from_millis(1100)));
        assert_eq!(
            (c.connect_timeout, c.banner_timeout),
            (Duration::from_millis(300), Duration::from_millis(800))
        );
        let c = m.request(addr(), Some(Duration::from_secs(60)));
        assert_eq!((c.connect_timeout, c.banner_timeout), (m.connect_timeout, m.banner_timeout));
    }
}
