//! The VOI stage: from modality values (after Rescale Slope/Intercept) to 8-bit display levels.
//!
//! Windows follow DICOM PS3.3 C.11.2.1.2 with the output range 0..255, rounded half to even (as
//! numpy rounds). Presets are applied to modality values, i.e. Hounsfield units for CT.

use crate::image_decode::ImageError;

/// Named windows, (center, width) in modality units (HU for CT).
pub const PRESETS: &[(&str, f64, f64)] = &[
    ("lung", -600.0, 1500.0),
    ("mediastinum", 40.0, 400.0),
    ("bone", 400.0, 1800.0),
    ("brain", 40.0, 80.0),
    ("abdomen", 40.0, 400.0),
    ("liver", 60.0, 160.0),
];

/// The VOI LUT Function (0028,1056).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum VoiFunction {
    Linear,
    LinearExact,
    Sigmoid,
}

/// What the `window` argument asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum WindowSpec {
    /// The file's VOI LUT sequence or first window, else min-max.
    Auto,
    /// The frame's minimum and maximum modality values.
    MinMax,
    /// An explicit center and width (a preset or `'C/W'`), linear.
    Explicit { center: f64, width: f64 },
}

impl WindowSpec {
    /// Parses `'auto'`, `'minmax'`, a preset name or `'C/W'` (case-insensitive, spaces allowed).
    pub fn parse(text: &str) -> Result<WindowSpec, ImageError> {
        let t = text.trim().to_ascii_lowercase();
        if t == "auto" {
            return Ok(WindowSpec::Auto);
        }
        if t == "minmax" || t == "min-max" {
            return Ok(WindowSpec::MinMax);
        }
        if let Some(&(_, center, width)) = PRESETS.iter().find(|(name, _, _)| *name == t) {
            return Ok(WindowSpec::Explicit { center, width });
        }
        let bad = || {
            let names: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
            ImageError::Invalid(format!(
                "invalid window \"{}\": expected 'auto', 'minmax', a preset ({}) or 'center/width' such as '40/400'",
                text.chars().take(40).collect::<String>(),
                names.join(", ")
            ))
        };
        let (c, w) = t.split_once('/').ok_or_else(bad)?;
        let center: f64 = c.trim().parse().map_err(|_| bad())?;
        let width: f64 = w.trim().parse().map_err(|_| bad())?;
        if !center.is_finite() || !width.is_finite() {
            return Err(bad());
        }
        if width < 1.0 {
            return Err(ImageError::Invalid(format!("window width {width} is below 1 (PS3.3 C.11.2.1.2.1)")));
        }
        Ok(WindowSpec::Explicit { center, width })
    }
}

/// A resolved VOI transform for one frame.
#[derive(Clone, Debug)]
pub enum Voi {
    Window { center: f64, width: f64, function: VoiFunction },
    MinMax { min: f64, max: f64 },
    /// A VOI LUT: first mapped value, output bits, entries.
    Lut { first: f64, bits: u32, table: Vec<u16> },
}

fn to_level(unit: f64) -> u8 {
    (unit * 255.0).round_ties_even().clamp(0.0, 255.0) as u8
}

impl Voi {
    /// Builds a min-max transform from the frame's values.
    pub fn min_max(values: &[f64]) -> Voi {
        let (min, max) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        Voi::MinMax { min, max }
    }

    /// Maps one modality value to 0..255.
    pub fn apply(&self, x: f64) -> u8 {
        match *self {
            Voi::Window { center: c, width: w, function: VoiFunction::Linear } => {
                let w1 = w - 1.0;
                if x <= c - 0.5 - w1 / 2.0 {
                    0
                } else if x > c - 0.5 + w1 / 2.0 {
                    255
                } else {
                    to_level((x - (c - 0.5)) / w1 + 0.5)
                }
            }
            Voi::Window { center: c, width: w, function: VoiFunction::LinearExact } => {
                if x <= c - w / 2.0 {
                    0
                } else if x > c + w / 2.0 {
                    255
                } else {
                    to_level((x - c) / w + 0.5)
                }
            }
            Voi::Window { center: c, width: w, function: VoiFunction::Sigmoid } => {
                to_level(1.0 / (1.0 + (-4.0 * (x - c) / w).exp()))
            }
            Voi::MinMax { min, max } => {
                if max > min {
                    to_level((x - min) / (max - min))
                } else {
                    0
                }
            }
            Voi::Lut { first, bits, ref table } => {
                let last = table.len() as f64 - 1.0;
                let index = (x - first).clamp(0.0, last) as usize;
                let top = ((1u64 << bits) - 1) as f64;
                to_level(table[index] as f64 / top)
            }
        }
    }

    /// Maps a frame of modality values, inverting for MONOCHROME1.
    pub fn apply_all(&self, values: &[f64], invert: bool) -> Vec<u8> {
        values
            .iter()
            .map(|&v| {
                let level = self.apply(v);
                if invert {
                    255 - level
                } else {
                    level
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(WindowSpec::parse(" AUTO ").unwrap(), WindowSpec::Auto);
        assert_eq!(WindowSpec::parse("minmax").unwrap(), WindowSpec::MinMax);
        assert_eq!(WindowSpec::parse("Lung").unwrap(), WindowSpec::Explicit { center: -600.0, width: 1500.0 });
        assert_eq!(WindowSpec::parse("-1000 / 2000").unwrap(), WindowSpec::Explicit { center: -1000.0, width: 2000.0 });
        for bad in ["", "wide", "40", "40/", "a/b", "40/0", "nan/400", "40/inf"] {
            assert!(WindowSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn linear_window_follows_the_standard_breakpoints() {
        // PS3.3 C.11.2.1.2.1 with C = 40, W = 400: x <= -160.5 -> 0, x > 238.5 -> 255.
        let voi = Voi::Window { center: 40.0, width: 400.0, function: VoiFunction::Linear };
        assert_eq!(voi.apply(-160.5), 0);
        assert_eq!(voi.apply(238.6), 255);
        // ((x - 39.5) / 399 + 0.5) * 255 at x = 39.5 is 127.5, which rounds to even: 128.
        assert_eq!(voi.apply(39.5), 128);
    }
}
