//! The default pack's cut-out network (issue 27) on photos whose background is busy, which the
//! border-grown mask refuses: held-out photographic ads (products and photographs it never
//! trained on, tests/fixtures/busy_photos/) are cut out close to their exact alpha, and a photo
//! with no product in it is refused with advice to paint it.

use std::path::Path;

use adcanvas::input::image_io::{DecodeLimits, decode_image};
use adcanvas::input::mask::{MaskError, MaskSource};
use adcanvas::model::Model;
use adcanvas::pack::read_pack_dir;
use adcanvas::pipeline::{PipelineError, prepare_product, prepare_product_segmented};
use burn::tensor::Device;

const HELD_OUT: [u32; 4] = [0, 1, 2, 17];

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn default_model() -> Model {
    let (manifest, files) = read_pack_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default")).unwrap();
    Model::from_pack(manifest, &files, &Device::flex()).unwrap()
}

#[test]
fn busy_held_out_photos_are_cut_out_close_to_their_exact_alpha() {
    let model = default_model();
    let segmenter = model.segmenter.as_ref().expect("the default pack carries the cut-out network");
    let mut ious = Vec::new();
    for n in HELD_OUT {
        let photo = fixture(&format!("busy_photos/heldout_{n}.jpg"));
        // Precondition: the border-grown mask cannot do these.
        assert!(
            matches!(prepare_product(&photo), Err(PipelineError::Mask(MaskError::BusyBackground { .. }))),
            "heldout_{n}: expected the plain-background mask to refuse it"
        );
        let product = pollster::block_on(prepare_product_segmented(&photo, Some(segmenter)))
            .unwrap_or_else(|e| panic!("heldout_{n}: {e}"));
        assert!(matches!(product.mask.source, MaskSource::Network { .. }), "heldout_{n}: {:?}", product.mask.source);
        let alpha =
            decode_image(&fixture(&format!("busy_photos/heldout_{n}_alpha.png")), &DecodeLimits::default()).unwrap();
        let truth: Vec<bool> = alpha.rgba.pixels().map(|p| p.0[0] >= 128).collect();
        let ours: Vec<bool> = product.mask.alpha.iter().map(|&a| a >= 0.5).collect();
        let both = truth.iter().zip(&ours).filter(|(t, o)| **t && **o).count();
        let either = truth.iter().zip(&ours).filter(|(t, o)| **t || **o).count();
        ious.push((n, both as f64 / either as f64));
    }
    // What the shipped network (7961 steps) does on these four (0.99, 0.98, 0.94, 0.91, read at
    // 256² with the mirror image; over all 300 held-out ads: mean 0.88, median 0.96,
    // docs/EVAL.md), less a margin: issue 27's goal (IoU ≥ 0.90 on ordinary backgrounds) is not
    // met on the mean yet, and this holds what is. (6623 steps read at 192²: 0.99, 0.98, 0.83,
    // 0.87; 5368 steps: 0.99, 0.98, 0.90, 0.87; the first network, 2484 steps, one pass: 0.97,
    // 0.98, 0.73, 0.84.)
    let mean = ious.iter().map(|(_, iou)| iou).sum::<f64>() / ious.len() as f64;
    eprintln!("IoU with the exact alpha: {ious:?}, mean {mean:.3}");
    assert!(ious.iter().all(|(_, iou)| *iou >= 0.80) && mean >= 0.90, "IoU with the exact alpha: {ious:?}");
}

/// Against PyTorch with the pack's own dequantised weights (scripts/make_segmenter_fixture.py), on
/// a photo already at the network's side: the same pixels in, the same probabilities out.
#[test]
fn the_network_matches_pytorch() {
    let model = default_model();
    let segmenter = model.segmenter.as_ref().unwrap();
    let expected: serde_json::Value = serde_json::from_slice(&fixture("segmenter_parity.json")).unwrap();
    let (side, every) = (expected["side"].as_u64().unwrap() as usize, expected["every"].as_u64().unwrap() as usize);
    assert_eq!(side, segmenter.side());
    let photo = decode_image(&fixture("segmenter_parity.png"), &DecodeLimits::default()).unwrap();
    let ours = pollster::block_on(segmenter.probability(&photo.rgba)).unwrap();
    let mut worst = 0f64;
    for (r, row) in expected["probability"].as_array().unwrap().iter().enumerate() {
        for (c, p) in row.as_array().unwrap().iter().enumerate() {
            worst = worst.max((ours[r * every * side + c * every] as f64 - p.as_f64().unwrap()).abs());
        }
    }
    assert!(worst <= 2e-3, "the network's probabilities differ from PyTorch's by up to {worst}");
}

#[test]
fn a_photo_with_no_product_is_refused_with_advice_to_paint_it() {
    let model = default_model();
    // Coloured noise: busy everywhere, and nothing in it a seller would call a product.
    let err = pollster::block_on(prepare_product_segmented(&fixture("busy.jpg"), model.segmenter.as_ref()))
        .err()
        .expect("a photo of noise gave a product");
    let message = err.to_string();
    assert!(
        matches!(err, PipelineError::Mask(MaskError::Unsure { .. } | MaskError::Empty)),
        "refused for another reason: {message}"
    );
    assert!(message.contains("brush") || message.contains("cut-out with transparency"), "{message}");
}

#[test]
fn without_the_network_a_busy_photo_is_refused_as_before() {
    let photo = fixture("busy_photos/heldout_0.jpg");
    let err = pollster::block_on(prepare_product_segmented(&photo, None)).err().unwrap();
    assert!(matches!(err, PipelineError::Mask(MaskError::BusyBackground { .. })), "{err}");
}
