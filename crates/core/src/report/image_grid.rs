//! Captioned thumbnail grids (e.g. predictions on validation images: green = right, red = wrong).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::ReportError;
use super::style::{FAMILY, check_size, plot_err, text_enabled};

/// One thumbnail of an [`image_grid`].
#[derive(Debug, Clone, PartialEq)]
pub struct Tile {
    /// Packed RGB pixels, row-major, `width * height * 3` bytes.
    pub rgb: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Text under the thumbnail.
    pub caption: String,
    /// Colour of the caption and the frame (e.g. green for a correct prediction, red for a wrong one).
    pub caption_color: [u8; 3],
}

impl Tile {
    /// Green used for correct predictions.
    pub const CORRECT: [u8; 3] = [30, 140, 60];
    /// Red used for wrong predictions.
    pub const WRONG: [u8; 3] = [200, 35, 40];

    /// A blank 96 x 96 tile captioned `caption` in red, for a grid with nothing to show.
    pub fn placeholder(caption: &str) -> Tile {
        Tile { rgb: vec![255; 96 * 96 * 3], width: 96, height: 96, caption: caption.into(), caption_color: Tile::WRONG }
    }
}

/// Space between cells and around the grid.
const PAD: u32 = 10;
/// Width of the coloured frame around each thumbnail.
const FRAME: u32 = 3;
/// Height of the caption band (when text can be drawn).
const CAPTION_H: u32 = 24;

/// Composes `tiles` into one PNG, `columns` per row, each thumbnail framed and captioned in its
/// `caption_color`. Cells are as large as the largest tile; smaller tiles are centred. The image
/// size is [`image_grid_size`].
pub fn image_grid(path: &Path, tiles: &[Tile], columns: usize) -> Result<(), ReportError> {
    draw_grid(path, tiles, columns, text_enabled()).map(|_| ())
}

/// Pixel size of the image [`image_grid`] writes for these tiles (at least 64 x 64).
pub fn image_grid_size(tiles: &[Tile], columns: usize) -> (u32, u32) {
    let cell = (tiles.iter().map(|t| t.width).max().unwrap_or(1), tiles.iter().map(|t| t.height).max().unwrap_or(1));
    let (w, h) = grid_size(tiles.len(), columns, cell, text_enabled());
    (w.max(64), h.max(64))
}

/// Size of the grid image for tiles of at most `cell` pixels.
pub(crate) fn grid_size(count: usize, columns: usize, cell: (u32, u32), text: bool) -> (u32, u32) {
    let cols = columns.min(count).max(1) as u32;
    let rows = count.div_ceil(columns.max(1)).max(1) as u32;
    let cap = if text { CAPTION_H } else { 0 };
    (PAD + cols * (cell.0 + 2 * FRAME + PAD), PAD + rows * (cell.1 + 2 * FRAME + cap + PAD))
}

pub(crate) fn draw_grid(path: &Path, tiles: &[Tile], columns: usize, text: bool) -> Result<(u32, u32), ReportError> {
    if columns == 0 {
        return Err(ReportError::Invalid(format!("image grid {}: columns must be at least 1", path.display())));
    }
    if tiles.is_empty() {
        return Err(ReportError::Invalid(format!("image grid {}: no tiles", path.display())));
    }
    for (i, t) in tiles.iter().enumerate() {
        let want = t.width as usize * t.height as usize * 3;
        if t.width == 0 || t.height == 0 || t.rgb.len() != want {
            return Err(ReportError::Invalid(format!(
                "image grid {}: tile {i} is {}x{} but has {} bytes (expected {want}, packed RGB)",
                path.display(),
                t.width,
                t.height,
                t.rgb.len()
            )));
        }
    }
    let cell = (tiles.iter().map(|t| t.width).max().unwrap_or(1), tiles.iter().map(|t| t.height).max().unwrap_or(1));
    let size = grid_size(tiles.len(), columns, cell, text);
    check_size(path, (size.0.max(64), size.1.max(64)))?;
    // Tiny grids are padded up to the backend's minimum so the call cannot fail on small thumbnails.
    let size = (size.0.max(64), size.1.max(64));

    let err = plot_err(path);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&RGBColor(248, 249, 250)).map_err(&err)?;
    let cap_h = if text { CAPTION_H } else { 0 };
    let max_chars = ((cell.0 + 2 * FRAME) / 7).max(4) as usize;
    for (i, t) in tiles.iter().enumerate() {
        let (col, row) = ((i % columns) as u32, (i / columns) as u32);
        let cx = PAD + col * (cell.0 + 2 * FRAME + PAD);
        let cy = PAD + row * (cell.1 + 2 * FRAME + cap_h + PAD);
        // Centre smaller tiles inside the cell.
        let x = (cx + (cell.0 - t.width) / 2) as i32;
        let y = (cy + (cell.1 - t.height) / 2) as i32;
        let [r, g, b] = t.caption_color;
        let color = RGBColor(r, g, b);
        let f = FRAME as i32;
        root.draw(&Rectangle::new([(x - f, y - f), (x + t.width as i32 + f, y + t.height as i32 + f)], color.filled()))
            .map_err(&err)?;
        let bitmap = BitMapElement::with_ref((x, y), (t.width, t.height), &t.rgb).ok_or_else(|| {
            ReportError::Invalid(format!("image grid {}: tile {i} buffer does not match its size", path.display()))
        })?;
        root.draw(&bitmap).map_err(&err)?;
        if text && !t.caption.is_empty() {
            let style =
                (FAMILY, 14.0, FontStyle::Bold).into_font().color(&color).pos(Pos::new(HPos::Center, VPos::Center));
            let caption = super::style::ellipsize(&t.caption, max_chars);
            let mid_x = (cx + FRAME + cell.0 / 2) as i32;
            let mid_y = (cy + cell.1 + 2 * FRAME + CAPTION_H / 2 + 1) as i32;
            root.draw_text(&caption, &style, (mid_x, mid_y)).map_err(&err)?;
        }
    }
    root.present().map_err(&err)?;
    Ok(size)
}
