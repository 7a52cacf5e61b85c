//! The probe table: one row per Go function the tracer hooks.

/// Stable probe identifiers. Values are never reused; holes are allowed.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeId {
    /// `net/http.serverHandler.ServeHTTP`: a request enters the handler chain.
    HttpServe = 1,
}

impl ProbeId {
    pub const ALL: &'static [ProbeId] = &[ProbeId::HttpServe];

    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(ProbeId::HttpServe),
            _ => None,
        }
    }
}

/// How a probe is placed and which kernel program runs there.
#[derive(Clone, Copy, Debug)]
pub struct ProbeSpec {
    pub id: ProbeId,
    /// Go symbol, as in .symtab / .gopclntab.
    pub go_symbol: &'static str,
    /// Name of the `#[uprobe]` program in the eBPF object.
    pub program: &'static str,
    /// Whether the program reads the function's arguments from registers. Such a
    /// program may only sit where the arguments are still in their ABI registers
    /// (the prologue, before anything is stored or moved).
    pub reads_args: bool,
}

pub const PROBES: &[ProbeSpec] = &[ProbeSpec {
    id: ProbeId::HttpServe,
    go_symbol: "net/http.serverHandler.ServeHTTP",
    program: "http_serve",
    reads_args: true,
}];

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
