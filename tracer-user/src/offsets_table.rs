//! Built-in Go struct offsets for binaries without DWARF, by Go version range.
//!
//! Every value below was read from the DWARF of `tests/fixtures/httpserver` built with
//! `CGO_ENABLED=0 go build -trimpath` by go1.21.13, go1.22.12, go1.23.12, go1.24.13, go1.25.14
//! and go1.26.11 (latest patches served by the Go module proxy), cross-checked against the .0
//! and a middle patch of each minor, go1.26.8–.10, and GOARCH=arm64 builds of go1.21.13 and
//! go1.26.11 (same offsets: one 64-bit layout).
//! The unit tests compare the table with the DWARF of every such build that is present
//! (`tracer-user/tests-data/build-go-versions.sh` makes them). 32-bit targets are not covered.
//!
//! Rows are "since" ranges keyed by (minor, patch) — layouts do change in patch releases
//! (go1.26.11) — so a row holds from its version until the next row: new patch releases, and
//! minors newer than the newest verified one, resolve to the latest row.

use super::GoOffsets;

/// Verified Go versions (major 1, minors inclusive).
pub(super) const VERIFIED_MINORS: (u32, u32) = (21, 26);

/// Human-readable [`VERIFIED_MINORS`].
pub const TABLE_COVERS: &str = "go1.21 – go1.26";

/// go1.21 and go1.22.
const SINCE_1_21: GoOffsets = GoOffsets {
    request_method: 0,
    request_url: 16,
    request_host: 128,
    request_remote_addr: 176,
    request_uri: 192,
    request_pattern: u32::MAX, // Request.Pattern appeared in go1.23
    url_scheme: 0,
    url_host: 40,
    url_path: 56,
    url_raw_path: 72,
    response_req: 8,
    response_status: 120,
    response_written: 104,
    resp_status_code: 16,
    g_goid: 152,
    g_parent_goid: 272,
    request_header: 56,
    request_content_length: 88, // the same in every verified version
};

/// go1.23 and go1.24: `Request.Pattern` added; `g.syscallbp` added before `goid`.
const SINCE_1_23: GoOffsets = GoOffsets {
    request_pattern: 232,
    g_goid: 160,
    g_parent_goid: 280,
    ..SINCE_1_21
};

/// go1.25: `g.sched` (gobuf) lost a word, so `goid` moves back.
const SINCE_1_25: GoOffsets = GoOffsets {
    g_goid: 152,
    g_parent_goid: 272,
    ..SINCE_1_23
};

/// go1.26.0 – go1.26.10: `url.URL` reordered (RawPath after Fragment and RawQuery).
/// `g.parentGoid` moves 8 bytes later (a field added between goid and parentGoid).
const SINCE_1_26: GoOffsets = GoOffsets {
    url_raw_path: 104,
    g_parent_goid: 280,
    ..SINCE_1_25
};

/// go1.26.11 (a patch release!): in `http.response` `reqBody` shrank to one word and
/// `ecReader` was added, moving `written` and `status`. go1.26.8–.10 verified unchanged.
const SINCE_1_26_11: GoOffsets = GoOffsets {
    response_written: 112,
    response_status: 128,
    ..SINCE_1_26
};

/// ((since minor, since patch), offsets), oldest first.
const ROWS: [((u32, u32), GoOffsets); 5] = [
    ((21, 0), SINCE_1_21),
    ((23, 0), SINCE_1_23),
    ((25, 0), SINCE_1_25),
    ((26, 0), SINCE_1_26),
    ((26, 11), SINCE_1_26_11),
];

pub(super) fn lookup(major: u32, minor: u32, patch: u32) -> (GoOffsets, bool) {
    let (oldest, newest) = VERIFIED_MINORS;
    let covered = major == 1 && (oldest..=newest).contains(&minor);
    let version = match major {
        0 | 1 => (minor, patch),
        _ => (u32::MAX, u32::MAX), // Go 2+: best effort with the newest row.
    };
    let row = ROWS
        .iter()
        .rev()
        .find(|(since, _)| *since <= version)
        .or(ROWS.first()) // older than the table: the oldest row, best effort
        .map_or(SINCE_1_21, |(_, offsets)| *offsets);
    (row, covered)
}
