//! PFV against an independent NumPy implementation (`scripts/make_pfv_cases.py` →
//! `tests/fixtures/pfv_cases.json`). The browser tests (tests/e2e) run the same cases through
//! the wasm build in Chromium, so native and browser are held to the same expected outputs.

use adcanvas::pfv::{PfvConfig, patch_visibility};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    name: String,
    width: u32,
    height: u32,
    patch: u32,
    threshold: f32,
    token_cols: u32,
    token_rows: u32,
    mask: Vec<f32>,
    cols: u32,
    rows: u32,
    visible: Vec<u8>,
    token_keep: Vec<u8>,
}

#[derive(Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[test]
fn pfv_matches_the_numpy_reference() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pfv_cases.json");
    let cases: Cases = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert!(cases.cases.len() >= 8);
    for c in &cases.cases {
        let grid = patch_visibility(&c.mask, c.width, c.height, &PfvConfig { patch: c.patch, threshold: c.threshold })
            .unwrap();
        assert_eq!((grid.cols, grid.rows), (c.cols, c.rows), "{}: grid size", c.name);
        let visible: Vec<u8> = grid.visible.iter().map(|&v| u8::from(v)).collect();
        assert_eq!(visible, c.visible, "{}: patch visibility", c.name);
        let keep: Vec<u8> = grid.token_keep(c.token_cols, c.token_rows).iter().map(|&v| u8::from(v)).collect();
        assert_eq!(keep, c.token_keep, "{}: token keep-list", c.name);
    }
}
