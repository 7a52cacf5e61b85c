//! The probe table: one row per Go code location the tracer hooks.

/// Stable probe identifiers. Values are never reused; holes are allowed.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeId {
    /// `net/http.serverHandler.ServeHTTP`: a request enters the handler chain.
    HttpServe = 1,
    /// `net/http.(*response).finishRequest`: the response is complete.
    HttpServeEnd = 2,
    /// `net/http.(*Transport).roundTrip`: an outgoing request starts.
    HttpClient = 3,
    /// Return of `(*persistConn).roundTrip` inside `(*Transport).roundTrip`.
    HttpClientEnd = 4,
    /// Kraken: `announcer.(*Announcer).Announce`: which blob the next announce is for.
    KrakenAnnounce = 10,
    /// Kraken: `store.(*CADownloadStore).MoveDownloadFileToCache`: a download is complete.
    KrakenCached = 11,
    /// Kraken: `blobrefresh.(*Refresher).Refresh`: an origin backend fetch starts.
    KrakenRefresh = 12,
    /// Kraken: `store.(*CAStore).WriteBlobToCacheWithMetaInfo`: the fetched blob's cache write.
    KrakenCacheWrite = 13,
    /// Kraken: return of `(*Refresher).download` inside `Refresh.func1`: the fetch ended.
    KrakenRefreshDone = 14,
}

impl ProbeId {
    pub const ALL: &'static [ProbeId] = &[
        ProbeId::HttpServe,
        ProbeId::HttpServeEnd,
        ProbeId::HttpClient,
        ProbeId::HttpClientEnd,
        ProbeId::KrakenAnnounce,
        ProbeId::KrakenCached,
        ProbeId::KrakenRefresh,
        ProbeId::KrakenCacheWrite,
        ProbeId::KrakenRefreshDone,
    ];

    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(ProbeId::HttpServe),
            2 => Some(ProbeId::HttpServeEnd),
            3 => Some(ProbeId::HttpClient),
            4 => Some(ProbeId::HttpClientEnd),
            10 => Some(ProbeId::KrakenAnnounce),
            11 => Some(ProbeId::KrakenCached),
            12 => Some(ProbeId::KrakenRefresh),
            13 => Some(ProbeId::KrakenCacheWrite),
            14 => Some(ProbeId::KrakenRefreshDone),
            _ => None,
        }
    }
}

/// Where in `go_symbol` the probe goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// The function's entry (the cheapest emulated instruction of its prologue). With
    /// `reads_args`, the site must precede any write to an argument register.
    Entry { reads_args: bool },
    /// Right after each call to `callee` inside `go_symbol` returns, while the callee's
    /// results are still in their registers: a return probe without a RET probe or uretprobe.
    AfterCall { callee: &'static str },
}

/// How a probe is placed and which kernel program runs there.
#[derive(Clone, Copy, Debug)]
pub struct ProbeSpec {
    pub id: ProbeId,
    /// Go symbol, as in .symtab / .gopclntab.
    pub go_symbol: &'static str,
    /// Name of the `#[uprobe]` program in the eBPF object.
    pub program: &'static str,
    pub site: Site,
    /// A process lacking this symbol is still traced (without this probe).
    pub optional: bool,
    /// Only placed in Kraken processes (built from github.com/uber/kraken).
    pub kraken_only: bool,
}

pub const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        id: ProbeId::HttpServe,
        go_symbol: "net/http.serverHandler.ServeHTTP",
        program: "http_serve",
        site: Site::Entry { reads_args: true },
        optional: false,
        kraken_only: false,
    },
    ProbeSpec {
        id: ProbeId::HttpServeEnd,
        go_symbol: "net/http.(*response).finishRequest",
        program: "http_serve_end",
        site: Site::Entry { reads_args: true },
        optional: false,
        kraken_only: false,
    },
    ProbeSpec {
        id: ProbeId::HttpClient,
        go_symbol: "net/http.(*Transport).roundTrip",
        program: "http_client",
        site: Site::Entry { reads_args: true },
        optional: true,
        kraken_only: false,
    },
    ProbeSpec {
        id: ProbeId::HttpClientEnd,
        go_symbol: "net/http.(*Transport).roundTrip",
        program: "http_client_end",
        site: Site::AfterCall {
            callee: "net/http.(*persistConn).roundTrip",
        },
        optional: true,
        kraken_only: false,
    },
    ProbeSpec {
        id: ProbeId::KrakenAnnounce,
        go_symbol: "github.com/uber/kraken/lib/torrent/scheduler/announcer.(*Announcer).Announce",
        program: "kraken_announce",
        site: Site::Entry { reads_args: true },
        optional: true,
        kraken_only: true,
    },
    ProbeSpec {
        id: ProbeId::KrakenCached,
        go_symbol: "github.com/uber/kraken/lib/store.(*CADownloadStore).MoveDownloadFileToCache",
        program: "kraken_cached",
        site: Site::Entry { reads_args: true },
        optional: true,
        kraken_only: true,
    },
    ProbeSpec {
        id: ProbeId::KrakenRefresh,
        go_symbol: "github.com/uber/kraken/lib/blobrefresh.(*Refresher).Refresh",
        program: "kraken_refresh",
        site: Site::Entry { reads_args: true },
        optional: true,
        kraken_only: true,
    },
    ProbeSpec {
        id: ProbeId::KrakenCacheWrite,
        go_symbol: "github.com/uber/kraken/lib/store.(*CAStore).WriteBlobToCacheWithMetaInfo",
        program: "kraken_cache_write",
        site: Site::Entry { reads_args: true },
        optional: true,
        kraken_only: true,
    },
    ProbeSpec {
        id: ProbeId::KrakenRefreshDone,
        go_symbol: "github.com/uber/kraken/lib/blobrefresh.(*Refresher).Refresh.func1",
        program: "kraken_refresh_done",
        site: Site::AfterCall {
            callee: "github.com/uber/kraken/lib/blobrefresh.(*Refresher).download",
        },
        optional: true,
        kraken_only: true,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_table_is_complete() {
        for id in ProbeId::ALL {
            assert_eq!(ProbeId::from_u32(*id as u32), Some(*id));
            assert!(
                PROBES.iter().any(|p| p.id == *id),
                "{id:?} has no PROBES row"
            );
        }
        assert_eq!(ProbeId::from_u32(0), None);
    }
}
