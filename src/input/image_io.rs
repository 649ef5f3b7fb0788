//! Decoding a user's product photo from bytes.
//!
//! The photo arrives as untrusted bytes (a browser upload or a CLI file), so this
//! module refuses oversized images from the header alone, before any pixel buffer
//! is allocated, applies the EXIF orientation the camera recorded, and downscales
//! to a working size the rest of the pipeline can afford. It touches no
//! filesystem, threads or clocks so it runs unchanged on wasm32.

use std::fmt;
use std::io::Cursor;

use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Rgba32FImage, RgbaImage};

/// Limits applied while decoding, so one hostile or huge upload cannot exhaust
/// memory (browsers give a wasm module a few GiB at most).
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeLimits {
    /// Largest accepted `width × height` as stored in the file (default 100 MP,
    /// above any current phone camera).
    pub max_input_pixels: u64,
    /// Largest accepted width or height (default 20 000 px): very long thin
    /// images are refused even when their pixel count is small.
    pub max_input_side: u32,
    /// The decoded image is downscaled so its longer side is at most this
    /// (default 2048): enough detail for a product on a ≤ 2048 canvas while
    /// keeping mask and layout work cheap. Never upscales.
    pub working_max_side: u32,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self { max_input_pixels: 100_000_000, max_input_side: 20_000, working_max_side: 2048 }
    }
}

/// A decoded, upright, RGBA product photo at working resolution.
#[derive(Clone, Debug)]
pub struct DecodedImage {
    /// Pixels after EXIF orientation and downscaling (straight, not premultiplied, alpha).
    pub rgba: RgbaImage,
    /// True only when some pixel has alpha < 255: then the alpha channel is the
    /// product mask (a cut-out); an opaque PNG counts as having no alpha so it
    /// goes through the automatic background mask instead.
    pub has_alpha: bool,
    /// Size of the upright image before downscaling to the working size
    /// (width and height already swapped for 90° EXIF rotations), so callers
    /// can report what the user uploaded.
    pub original_size: (u32, u32),
}

/// Why a photo could not be used; `Display` gives a sentence meant for the user.
#[derive(Clone, Debug, PartialEq)]
pub enum ImageError {
    /// No bytes were given.
    Empty,
    /// The bytes are not PNG, JPEG or WebP (the formats this tool supports).
    UnsupportedFormat,
    /// The header declares an image larger than [`DecodeLimits`] allows.
    TooLarge {
        /// Declared width in pixels.
        width: u32,
        /// Declared height in pixels.
        height: u32,
        /// The limit that was exceeded, in words (e.g. "100000000 pixels").
        limit: String,
    },
    /// The file claims a supported format but its data cannot be decoded.
    Corrupt(String),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::Empty => write!(f, "The file is empty; choose a PNG, JPEG or WebP photo of the product."),
            ImageError::UnsupportedFormat => write!(
                f,
                "The file is not a PNG, JPEG or WebP image. Save or export the photo in one of those formats and try again."
            ),
            ImageError::TooLarge { width, height, limit } => write!(
                f,
                "The image is {width}×{height} pixels; the largest accepted is {limit}. Resize the photo and try again."
            ),
            ImageError::Corrupt(detail) => write!(
                f,
                "The image file is damaged or incomplete and could not be read ({detail}). Try exporting it again."
            ),
        }
    }
}

impl std::error::Error for ImageError {}

/// Map the `image` crate's error to ours; limit errors become `TooLarge`.
fn map_err(e: image::ImageError, dims: Option<(u32, u32)>, limits: &DecodeLimits) -> ImageError {
    match e {
        image::ImageError::Unsupported(_) => ImageError::UnsupportedFormat,
        image::ImageError::Limits(l) => {
            let (width, height) = dims.unwrap_or((0, 0));
            ImageError::TooLarge {
                width,
                height,
                limit: format!(
                    "{} pixels and {} pixels per side ({l})",
                    limits.max_input_pixels, limits.max_input_side
                ),
            }
        }
        other => ImageError::Corrupt(other.to_string()),
    }
}

/// Check the header dimensions against the limits, before any pixel allocation.
fn check_dims(width: u32, height: u32, limits: &DecodeLimits) -> Result<(), ImageError> {
    if width > limits.max_input_side || height > limits.max_input_side {
        return Err(ImageError::TooLarge {
            width,
            height,
            limit: format!("{} pixels on a side", limits.max_input_side),
        });
    }
    if u64::from(width) * u64::from(height) > limits.max_input_pixels {
        return Err(ImageError::TooLarge {
            width,
            height,
            limit: format!("{} pixels in total", limits.max_input_pixels),
        });
    }
    if width == 0 || height == 0 {
        return Err(ImageError::Corrupt("the image has no pixels".into()));
    }
    Ok(())
}

/// Decode a PNG, JPEG or WebP product photo, upright and at working size.
///
/// Oversized images are refused from the header before decoding, and the
/// decoder also gets `image::Limits` so a file whose header lies (a
/// decompression bomb) cannot allocate beyond the same budget.
pub fn decode_image(bytes: &[u8], limits: &DecodeLimits) -> Result<DecodedImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    let mut reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| ImageError::Corrupt(e.to_string()))?;
    let reader_format = reader.format();
    match reader_format {
        Some(ImageFormat::Jpeg) => {
            // The JPEG decoder pads a truncated scan with grey instead of failing;
            // a half-uploaded photo must be refused, not turned into a grey product.
            if !jpeg_has_eoi(bytes) {
                return Err(ImageError::Corrupt("the JPEG data ends early".into()));
            }
        }
        Some(ImageFormat::Png | ImageFormat::WebP) => {}
        _ => return Err(ImageError::UnsupportedFormat),
    }
    // Allocation budget: the RGBA8 output plus generous decoder scratch (16-bit
    // PNGs decode to 8 bytes per pixel before conversion).
    let alloc_budget = limits.max_input_pixels.saturating_mul(8).saturating_add(64 << 20);
    let mut lim = image::Limits::default();
    lim.max_alloc = Some(alloc_budget);
    reader.limits(lim.clone());
    let mut decoder = reader.into_decoder().map_err(|e| map_err(e, None, limits))?;
    let (w, h) = decoder.dimensions();
    check_dims(w, h, limits)?;
    // Strict per-side limits for the actual decode, now that we know the header passed.
    lim.max_image_width = Some(limits.max_input_side);
    lim.max_image_height = Some(limits.max_input_side);
    if decoder.total_bytes() > alloc_budget {
        return Err(ImageError::TooLarge {
            width: w,
            height: h,
            limit: format!("{alloc_budget} bytes of decoded pixels"),
        });
    }
    if let Some(short) = png_data_too_short(bytes, w, h) {
        return Err(ImageError::Corrupt(short));
    }
    // A JPEG spends at least one bit on each 8 × 8 block of its brightness (the shortest
    // Huffman code for "no change"), so under a byte per 512 pixels it cannot be complete: the
    // decoder would fill the declared pixels (up to 400 MB) from next to nothing. Half that, to
    // be safe.
    if reader_format == Some(ImageFormat::Jpeg) && (bytes.len() as u64) * 1024 < u64::from(w) * u64::from(h) {
        return Err(ImageError::Corrupt(format!(
            "its {} bytes cannot hold the {w}×{h} pixels its header declares",
            bytes.len()
        )));
    }
    decoder.set_limits(lim).map_err(|e| map_err(e, Some((w, h)), limits))?;
    // A broken EXIF block should not make an otherwise good photo unusable.
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut dynimg = DynamicImage::from_decoder(decoder).map_err(|e| map_err(e, Some((w, h)), limits))?;
    dynimg.apply_orientation(orientation);
    let original_size = (dynimg.width(), dynimg.height());
    let mut rgba = dynimg.into_rgba8();
    let has_alpha = rgba.pixels().any(|p| p.0[3] < 255);

    let (ow, oh) = original_size;
    let longer = ow.max(oh);
    if limits.working_max_side > 0 && longer > limits.working_max_side {
        let s = f64::from(limits.working_max_side) / f64::from(longer);
        let nw = ((f64::from(ow) * s).round() as u32).clamp(1, limits.working_max_side);
        let nh = ((f64::from(oh) * s).round() as u32).clamp(1, limits.working_max_side);
        // A very large photo is first averaged down by a whole factor to at most twice the
        // working size, so the filter's float buffers are sized by that, not by the photo
        // (a 100 MP cut-out would otherwise need 1.6 GB of them: more than a browser tab has).
        let factor = longer / (2 * limits.working_max_side);
        if factor >= 2 {
            rgba = box_shrink(&rgba, factor);
        }
        rgba = if has_alpha {
            resize_premultiplied(&rgba, nw, nh, FilterType::Lanczos3)
        } else {
            image::imageops::resize(&rgba, nw, nh, FilterType::Lanczos3)
        };
    }
    Ok(DecodedImage { rgba, has_alpha, original_size })
}

/// Deflate packs at most 1032 bytes into one (258-byte matches in 2 bits' worth of codes, less
/// overhead), so a PNG whose compressed data is far too short for the rows its header declares
/// cannot be a picture: a damaged file, or a decompression bomb that would make the decoder
/// allocate every declared pixel (hundreds of MB) before finding out. Refused from the chunk
/// lengths alone, before any pixel buffer exists. `None` for anything that is not such a PNG.
fn png_data_too_short(bytes: &[u8], width: u32, height: u32) -> Option<String> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    const DEFLATE_MAX_RATIO: u64 = 1032;
    let rest = bytes.strip_prefix(SIGNATURE)?;
    if rest.get(4..8)? != b"IHDR" {
        return None;
    }
    // IHDR comes first: bit depth and colour type give the bits per pixel.
    let (depth, colour) = (*rest.get(16)?, *rest.get(17)?);
    let channels: u64 = match colour {
        0 | 3 => 1,
        2 => 3,
        4 => 2,
        6 => 4,
        _ => return None,
    };
    let row_bytes = (u64::from(width) * channels * u64::from(depth)).div_ceil(8) + 1;
    let raw = row_bytes * u64::from(height);
    let mut idat = 0u64;
    let mut at = 0usize;
    while let Some(head) = rest.get(at..at + 8) {
        let len = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
        if &head[4..8] == b"IDAT" {
            idat += len;
        }
        at = at.saturating_add(12).saturating_add(usize::try_from(len).ok()?);
    }
    // A zlib stream carries 6 bytes of header and checksum, plus block headers.
    (raw > (idat.saturating_sub(6) + 64) * DEFLATE_MAX_RATIO).then(|| {
        format!("its {idat} bytes of compressed data cannot hold the {width}×{height} pixels its header declares")
    })
}

/// True when a JPEG's main image is terminated by an EOI marker (FF D9).
///
/// Header segments (APPn with EXIF thumbnails, which hold their own EOI) are
/// skipped by their lengths; after the first scan header, entropy-coded data
/// cannot contain FF D9 (FF bytes are stuffed as FF 00), so any FF D9 from
/// there on is the real end of image. Trailing bytes after EOI are allowed.
fn jpeg_has_eoi(b: &[u8]) -> bool {
    let mut i = 2; // after SOI
    while i + 4 <= b.len() {
        if b[i] != 0xFF {
            return false;
        }
        let marker = b[i + 1];
        if marker == 0xFF {
            i += 1; // fill byte
            continue;
        }
        if marker == 0xD9 {
            return true;
        }
        if (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            i += 2;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
        if marker == 0xDA {
            return b[i + 2..].windows(2).any(|w| w == [0xFF, 0xD9]);
        }
        i += 2 + len;
    }
    false
}

/// Averages `factor × factor` blocks (the last row and column of blocks may be smaller), with
/// colours weighted by alpha so a transparent pixel's colour never reaches the product. Uses one
/// row of integer sums besides the output.
fn box_shrink(img: &RgbaImage, factor: u32) -> RgbaImage {
    let (w, h) = img.dimensions();
    let (nw, nh) = (w.div_ceil(factor), h.div_ceil(factor));
    let mut out = RgbaImage::new(nw, nh);
    // Per output column: alpha-weighted colour sums, alpha sum, pixel count.
    let mut sums = vec![[0u64; 5]; nw as usize];
    for oy in 0..nh {
        sums.iter_mut().for_each(|s| *s = [0; 5]);
        for y in oy * factor..((oy + 1) * factor).min(h) {
            let row = &img.as_raw()[(y * w * 4) as usize..((y + 1) * w * 4) as usize];
            for (x, p) in row.chunks_exact(4).enumerate() {
                let [r, g, b, a] = [p[0], p[1], p[2], p[3]].map(u64::from);
                let s = &mut sums[x / factor as usize];
                s[0] += r * a;
                s[1] += g * a;
                s[2] += b * a;
                s[3] += a;
                s[4] += 1;
            }
        }
        for (ox, s) in sums.iter().enumerate() {
            let colour = |c: u64| if s[3] == 0 { 0 } else { ((c + s[3] / 2) / s[3]) as u8 };
            let alpha = ((s[3] + s[4] / 2) / s[4]) as u8;
            out.put_pixel(ox as u32, oy, image::Rgba([colour(s[0]), colour(s[1]), colour(s[2]), alpha]));
        }
    }
    out
}

/// Resize straight-alpha RGBA through premultiplied alpha, so the colour of
/// transparent pixels (often black or garbage in cut-outs) does not bleed into
/// the product's edge. Shared with `layout`.
pub(crate) fn resize_premultiplied(img: &RgbaImage, w: u32, h: u32, filter: FilterType) -> RgbaImage {
    let mut pre = Rgba32FImage::new(img.width(), img.height());
    for (d, s) in pre.pixels_mut().zip(img.pixels()) {
        let a = f32::from(s.0[3]) / 255.0;
        d.0 = [f32::from(s.0[0]) / 255.0 * a, f32::from(s.0[1]) / 255.0 * a, f32::from(s.0[2]) / 255.0 * a, a];
    }
    let res = image::imageops::resize(&pre, w, h, filter);
    let mut out = RgbaImage::new(w, h);
    for (d, s) in out.pixels_mut().zip(res.pixels()) {
        let a = s.0[3].clamp(0.0, 1.0);
        if a <= 1.0 / 512.0 {
            d.0 = [0, 0, 0, 0];
            continue;
        }
        let c = |v: f32| ((v / a).clamp(0.0, 1.0) * 255.0).round() as u8;
        d.0 = [c(s.0[0]), c(s.0[1]), c(s.0[2]), (a * 255.0).round() as u8];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALPHA32: &[u8] = include_bytes!("../../tests/fixtures/product_alpha_32.png");
    const ALPHA128: &[u8] = include_bytes!("../../tests/fixtures/product_alpha_128.png");
    const WHITE: &[u8] = include_bytes!("../../tests/fixtures/product_white.jpg");
    const CORRUPT: &[u8] = include_bytes!("../../tests/fixtures/corrupt.png");
    const EXIF6: &[u8] = include_bytes!("../../tests/fixtures/exif_rotated.jpg");

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }

    /// A syntactically valid PNG whose header claims `w × h` RGBA pixels but
    /// whose IDAT holds almost nothing: a decompression-bomb stand-in.
    fn fake_png(w: u32, h: u32) -> Vec<u8> {
        let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
        chunk(&mut v, b"IHDR", &ihdr);
        // zlib stream of an empty stored block.
        chunk(&mut v, b"IDAT", &[0x78, 0x01, 0x01, 0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x01]);
        chunk(&mut v, b"IEND", &[]);
        v
    }

    #[test]
    fn decodes_alpha_png() {
        let d = decode_image(ALPHA32, &DecodeLimits::default()).unwrap();
        assert_eq!(d.rgba.dimensions(), (32, 32));
        assert_eq!(d.original_size, (32, 32));
        assert!(d.has_alpha);
        let d = decode_image(ALPHA128, &DecodeLimits::default()).unwrap();
        assert_eq!(d.rgba.dimensions(), (128, 128));
        assert!(d.has_alpha);
        assert_eq!(d.rgba.get_pixel(0, 0).0[3], 0);
        assert_eq!(d.rgba.get_pixel(64, 64).0[3], 255);
    }

    #[test]
    fn jpeg_and_opaque_png_have_no_alpha() {
        let d = decode_image(WHITE, &DecodeLimits::default()).unwrap();
        assert_eq!(d.rgba.dimensions(), (160, 120));
        assert!(!d.has_alpha);
        // Re-encode as an opaque RGBA PNG: still "no alpha".
        let mut buf = Vec::new();
        d.rgba.write_to(&mut Cursor::new(&mut buf), ImageFormat::Png).unwrap();
        let d2 = decode_image(&buf, &DecodeLimits::default()).unwrap();
        assert!(!d2.has_alpha);
        assert_eq!(d2.rgba, d.rgba);
    }

    #[test]
    fn applies_exif_orientation() {
        let d = decode_image(EXIF6, &DecodeLimits::default()).unwrap();
        // Stored 48×32, Orientation 6 = rotate 90° clockwise for display.
        assert_eq!(d.rgba.dimensions(), (32, 48));
        assert_eq!(d.original_size, (32, 48));
        // The stored top-left red marker ends up top-right.
        let p = d.rgba.get_pixel(28, 3).0;
        assert!(p[0] > 200 && p[1] < 60 && p[2] < 60, "{p:?}");
        // The stored bottom-right blue marker ends up bottom-left.
        let p = d.rgba.get_pixel(3, 44).0;
        assert!(p[2] > 200 && p[0] < 60 && p[1] < 60, "{p:?}");
    }

    #[test]
    fn downscales_to_working_size_keeping_aspect() {
        let lim = DecodeLimits { working_max_side: 64, ..Default::default() };
        let d = decode_image(WHITE, &lim).unwrap();
        assert_eq!(d.rgba.dimensions(), (64, 48));
        assert_eq!(d.original_size, (160, 120));
        // Never upscales.
        let lim = DecodeLimits { working_max_side: 4096, ..Default::default() };
        assert_eq!(decode_image(ALPHA32, &lim).unwrap().rgba.dimensions(), (32, 32));
        // Alpha cut-out downscale keeps transparent corners transparent and interior opaque.
        let lim = DecodeLimits { working_max_side: 64, ..Default::default() };
        let d = decode_image(ALPHA128, &lim).unwrap();
        assert_eq!(d.rgba.dimensions(), (64, 64));
        assert_eq!(d.rgba.get_pixel(0, 0).0[3], 0);
        assert_eq!(d.rgba.get_pixel(32, 32).0[3], 255);
        // More than twice the working size: averaged down by a whole factor first (128 → 32 by 4,
        // then filtered to 16), with the same result at the corners and in the middle.
        let lim = DecodeLimits { working_max_side: 16, ..Default::default() };
        let d = decode_image(ALPHA128, &lim).unwrap();
        assert_eq!(d.rgba.dimensions(), (16, 16));
        assert_eq!(d.rgba.get_pixel(0, 0).0[3], 0);
        assert_eq!(d.rgba.get_pixel(8, 8).0[3], 255);
    }

    #[test]
    fn box_shrink_weights_colour_by_alpha() {
        // A 3 × 2 image shrunk by 2: one full block, one half-width block at the edge.
        let img = RgbaImage::from_raw(
            3,
            2,
            vec![
                200, 0, 0, 255, /**/ 0, 0, 200, 0, /**/ 10, 20, 30, 255, //
                200, 0, 0, 255, /**/ 0, 0, 200, 0, /**/ 10, 20, 30, 255,
            ],
        )
        .unwrap();
        let out = box_shrink(&img, 2);
        assert_eq!(out.dimensions(), (2, 1));
        // The transparent blue adds nothing to the colour, half to the alpha.
        assert_eq!(out.get_pixel(0, 0).0, [200, 0, 0, 128]);
        assert_eq!(out.get_pixel(1, 0).0, [10, 20, 30, 255]);
    }

    #[test]
    fn refuses_empty_unsupported_and_corrupt() {
        assert_eq!(decode_image(&[], &DecodeLimits::default()).unwrap_err(), ImageError::Empty);
        let e = decode_image(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", &DecodeLimits::default()).unwrap_err();
        assert_eq!(e, ImageError::UnsupportedFormat);
        let e = decode_image(b"hello, this is text", &DecodeLimits::default()).unwrap_err();
        assert_eq!(e, ImageError::UnsupportedFormat);
        assert!(e.to_string().contains("not a PNG, JPEG or WebP"));
        let e = decode_image(CORRUPT, &DecodeLimits::default()).unwrap_err();
        assert!(matches!(e, ImageError::Corrupt(_)), "{e:?}");
        for cut in [WHITE.len() / 3, WHITE.len() - 2, 40] {
            let r = decode_image(&WHITE[..cut], &DecodeLimits::default());
            assert!(matches!(r, Err(ImageError::Corrupt(_))), "cut at {cut}");
        }
        // Trailing bytes after the end marker are harmless.
        let mut padded = WHITE.to_vec();
        padded.extend_from_slice(&[0u8; 16]);
        assert!(decode_image(&padded, &DecodeLimits::default()).is_ok());
        // EXIF-carrying JPEG (APP1 segment) is walked correctly.
        assert!(decode_image(EXIF6, &DecodeLimits::default()).is_ok());
    }

    #[test]
    fn refuses_oversized_from_header() {
        let bomb = fake_png(30_000, 30_000);
        let e = decode_image(&bomb, &DecodeLimits::default()).unwrap_err();
        match &e {
            ImageError::TooLarge { width, height, .. } => {
                assert_eq!((*width, *height), (30_000, 30_000))
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(e.to_string().starts_with("The image is 30000×30000 pixels; the largest accepted is"));
        // Within the limits, but with next to no data for its pixels: refused from the chunk
        // lengths, before the decoder allocates 9000 × 9000 × 4 bytes.
        let e = decode_image(&fake_png(9_000, 9_000), &DecodeLimits::default()).unwrap_err();
        assert!(e.to_string().contains("cannot hold the 9000×9000 pixels its header declares"), "{e}");
        // Under the per-side limit but over the pixel budget.
        let e = decode_image(&fake_png(15_000, 15_000), &DecodeLimits::default()).unwrap_err();
        assert!(matches!(e, ImageError::TooLarge { width: 15_000, .. }), "{e:?}");
        // Tight custom limits apply to real files too.
        let lim = DecodeLimits { max_input_pixels: 1000, ..Default::default() };
        assert!(matches!(decode_image(ALPHA32, &lim), Err(ImageError::TooLarge { .. })));
    }
}
