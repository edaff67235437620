//! Slide reading against tifffile (tools/reference_slide.py): the level list and the pixels of
//! sampled patches, on the shared Aperio SVS (JPEG tiles with shared tables, RGB without colour
//! transform), on pyramidal TIFFs generated from it (JPEG and deflate tiles, three levels), and on
//! DICOM whole-slide instances generated from it (native and JPEG baseline frames, TILED_FULL).
mod common;
use biomedclip_core::slide::{PatchParams, Slide};

#[derive(serde::Deserialize)]
struct Level {
    width: u32,
    height: u32,
    tile_width: u32,
    tile_height: u32,
}

#[derive(serde::Deserialize)]
struct Levels {
    path: String,
    levels: Vec<Level>,
}

#[test]
fn levels_and_patch_pixels_match_tifffile() {
    let out = std::env::temp_dir().join(format!("biomedclip-slide-ref-{}", std::process::id()));
    common::run_tool("reference_slide.py", &[out.to_str().unwrap()]);
    let mut compared = 0;
    for name in ["svs", "pyramid_jpeg", "pyramid_deflate", "dicom_wsi_native", "dicom_wsi_jpeg"] {
        let meta: Levels = serde_json::from_slice(&std::fs::read(out.join(format!("{name}.levels.json"))).unwrap()).unwrap();
        let data = std::fs::read(&meta.path).unwrap();
        let slide = Slide::open(&data).unwrap();
        let ours = slide.levels();
        assert_eq!(ours.len(), meta.levels.len(), "{name}: level count");
        for (o, r) in ours.iter().zip(&meta.levels) {
            assert_eq!((o.width, o.height, o.tile_width, o.tile_height), (r.width, r.height, r.tile_width, r.tile_height), "{name}");
        }
        for entry in std::fs::read_dir(&out).unwrap() {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap().to_str().unwrap().to_string();
            let Some(rest) = file.strip_prefix(&format!("{name}.L")).and_then(|r| r.strip_suffix(".rgb")) else { continue };
            let nums: Vec<u32> = rest.split('.').map(|p| p.trim_start_matches(|c: char| c.is_ascii_alphabetic()).parse().unwrap()).collect();
            let (level, x, y, size) = (nums[0] as usize, nums[1], nums[2], nums[3]);
            let region = slide.reader(level).unwrap().read_region(x, y, size, size).unwrap();
            let reference = std::fs::read(&path).unwrap();
            let diff = region.data.iter().zip(&reference).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
            assert_eq!(diff, 0, "{file}: max difference {diff}");
            compared += 1;
        }
    }
    assert!(compared >= 40, "only {compared} regions compared");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn tissue_selection_drops_the_background() {
    let data = std::fs::read(common::shared_data().join("wsi/CMU-1-Small-Region.svs")).unwrap();
    let slide = Slide::open(&data).unwrap();
    let mask = slide.tissue_mask().unwrap();
    let params = PatchParams { patch_size: 224, level: 0, tissue_threshold: 0.5, max_patches: 100_000 };
    let plan = slide.plan(&params, &mask).unwrap();
    eprintln!("grid {} patches, {} with tissue >= 0.5, Otsu threshold {}", plan.grid, plan.with_tissue, mask.threshold);
    assert_eq!(plan.grid, (2220 / 224) * (2967 / 224));
    assert!(plan.with_tissue > 0 && plan.with_tissue < plan.grid);
    let capped = slide.plan(&PatchParams { max_patches: 10, ..params }, &mask).unwrap();
    assert_eq!(capped.patches.len(), 10);
}

#[test]
fn bad_slides_are_errors() {
    let data = std::fs::read(common::shared_data().join("wsi/CMU-1-Small-Region.svs")).unwrap();
    for cut in [8usize, 1000, data.len() / 2, data.len() - 100] {
        let ok = Slide::open(&data[..cut]).and_then(|s| {
            let mut r = s.reader(0)?;
            r.read_region(0, 0, 2220, 2967).map(|_| ())
        });
        assert!(ok.is_err(), "cut at {cut} read");
    }
    let slide = Slide::open(&data).unwrap();
    assert!(slide.reader(3).is_err());
    assert!(Slide::open(b"not a tiff").is_err());
}
