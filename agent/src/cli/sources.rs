//! Reading the profile and host facts through [`underlay::source`]: the
//! precedence, the fetch (inside --netns when given), the pins, the cache.

use std::path::PathBuf;
use std::time::Duration;

use underlay::desired::Desired;
use underlay::profile;
use underlay::source::{
    self, cache, discover, Context, Freshness, Item, Loaded, SourceDoc, SourceError,
};
use underlay::system::https::FetchSettings;
use underlay::system::sources::LinuxSources;

use super::{under_root, Common, Failed};

/// Both items' bytes, and what is needed to refresh the cache afterwards.
pub struct Fetched {
    pub loaded: Vec<Loaded>,
    host: LinuxSources,
    cache_dir: PathBuf,
}

impl Fetched {
    pub fn docs(&self) -> Vec<SourceDoc> {
        self.loaded.iter().map(Loaded::doc).collect()
    }

    /// Keeps freshly fetched sources as the last good copies (apply only,
    /// once they validated). A failure here costs the next offline boot its
    /// fallback, not this run: it is a warning.
    pub fn store_cache(&mut self) {
        for l in &self.loaded {
            match cache::store(&mut self.host, &self.cache_dir, l) {
                Ok(true) => {
                    tracing::info!(item = %l.item, origin = %l.origin, sha256 = %l.sha256, "cached")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(item = %l.item, error = %e, "could not keep a cached copy")
                }
            }
        }
    }

    /// One line per source the cache stood in for.
    pub fn cache_notes(&self) -> Vec<String> {
        self.loaded
            .iter()
            .filter_map(|l| match &l.freshness {
                Freshness::FromCache { reason } => Some(format!(
                    "{} from the cache: {} could not be fetched ({reason}); the cached copy matches the pin {}",
                    l.item, l.origin, l.sha256
                )),
                Freshness::Cached => Some(format!(
                    "{} from the cache: the copy of {} that this host's apply fetched matches the pin {}; not fetched again",
                    l.item, l.origin, l.sha256
                )),
                _ => None,
            })
            .collect()
    }

    /// For the JSON `msg`: "; profile from the cache (server unreachable)".
    pub fn msg_suffix(&self) -> String {
        let of = |f: fn(&Freshness) -> bool| -> Vec<&str> {
            self.loaded
                .iter()
                .filter(|l| f(&l.freshness))
                .map(|l| l.item.key())
                .collect()
        };
        let mut out = String::new();
        for (items, why) in [
            (
                of(|f| matches!(f, Freshness::FromCache { .. })),
                "server unreachable",
            ),
            (of(|f| *f == Freshness::Cached), "matches the pin"),
        ] {
            if !items.is_empty() {
                out += &format!("; {} from the cache ({why})", items.join(" and "));
            }
        }
        out
    }
}

impl Common {
    fn settings(&self) -> discover::Settings {
        discover::Settings {
            flag_profile: self.profile.clone(),
            flag_profile_sha256: self.profile_sha256,
            flag_host: self.host.clone(),
            flag_host_sha256: self.host_sha256,
            cmdline: self.sources.cmdline.clone(),
            cloud_init_dir: self.sources.cloud_init_dir.clone(),
            instance_data: self.sources.instance_data.clone(),
            local_dir: under_root(&self.root, source::LOCAL_DIR),
        }
    }

    fn source_host(&self) -> LinuxSources {
        let s = FetchSettings {
            timeout: Duration::from_secs_f64(self.sources.fetch_timeout),
            connect_timeout: Duration::from_secs_f64(self.sources.fetch_timeout.min(5.0)),
            attempts: self.sources.fetch_attempts,
            ..FetchSettings::default()
        };
        LinuxSources::new(&self.sources.sysfs, &self.root, s)
    }

    /// Whether both items have a declared source (doctor runs its generic
    /// checks without them).
    pub(super) fn sources_declared(&self, verb: &'static str) -> Result<bool, Failed> {
        let mut host = self.source_host();
        let d = discover::discover(&self.settings(), &mut host)
            .map_err(|e| Failed::source(self, verb, &e))?;
        Ok(Item::BOTH.iter().all(|i| source::choose(&d, *i).is_ok()))
    }

    /// Finds, reads or fetches, and checks both items. Inside --netns the
    /// fetch uses the namespace's network, like everything else.
    pub(super) fn fetch_sources(&self, verb: &'static str) -> Result<Fetched, Failed> {
        let mut host = self.source_host();
        let cache_dir = under_root(&self.root, source::CACHE_DIR);
        let fail = |e: &SourceError, loaded: &[Loaded]| {
            Failed::source(self, verb, e).with_sources(loaded.iter().map(Loaded::doc).collect())
        };
        let d = discover::discover(&self.settings(), &mut host).map_err(|e| fail(&e, &[]))?;
        let ca = self
            .sources
            .ca_file
            .clone()
            .or_else(|| d.cmdline.ca.clone());
        let mut loaded = Vec::new();
        for item in Item::BOTH {
            let c = source::choose(&d, item).map_err(|e| fail(&e, &loaded))?;
            if matches!(c.location, source::Location::Url(_)) {
                self.enter_netns(verb)?;
                if let Some(ca) = &ca {
                    host.use_ca(ca).map_err(|e| fail(&e, &loaded))?;
                }
            }
            tracing::debug!(item = %item, level = c.level.key(), declared = %c.declared, "source chosen");
            let ctx = Context {
                cache_dir: &cache_dir,
                // After this boot's apply: the gates and the join take what
                // it fetched (the pin names the bytes) and never wait on the
                // provisioning server.
                cache_first: matches!(verb, "verify" | "join"),
                bootif: d.cmdline.bootif,
                cloud_hostname: d.cloud_hostname.as_deref(),
            };
            let l = source::load(item, &c, &mut host, &ctx).map_err(|e| fail(&e, &loaded))?;
            if let Freshness::FromCache { reason } = &l.freshness {
                tracing::warn!(item = %item, origin = %l.origin, reason = %reason, "server unreachable: using the cached copy");
            }
            tracing::info!(item = %item, level = l.level.key(), origin = %l.origin, sha256 = %l.sha256, "source loaded");
            loaded.push(l);
        }
        Ok(Fetched {
            loaded,
            host,
            cache_dir,
        })
    }

    /// Loads and validates the profile and host facts: before anything else
    /// runs, so bad input changes nothing.
    pub(super) fn load(&self, verb: &'static str) -> Result<(Desired, Fetched), Failed> {
        let f = self.fetch_sources(verb)?;
        let (role, host) = (&f.loaded[0], &f.loaded[1]);
        match profile::load_bytes(&role.origin, &role.bytes, &host.origin, &host.bytes) {
            Ok(d) => Ok((d, f)),
            Err(e) => Err(Failed::profile(self, verb, &e).with_sources(f.docs())),
        }
    }
}
