//! Colours that mean the same thing in every panel, readable on dark and light themes,
//! and the switch between those themes.

use egui::Color32;

pub(crate) const OK: Color32 = Color32::from_rgb(0x3f, 0xb9, 0x50);
pub(crate) const FAILED: Color32 = Color32::from_rgb(0xe5, 0x48, 0x4d);
pub(crate) const PENDING: Color32 = Color32::from_rgb(0xd6, 0x9e, 0x2e);
pub(crate) const SUSPENDED: Color32 = Color32::from_rgb(0xf0, 0x8c, 0x00);

/// Every theme change goes through here: at start, from the top bar and from settings.
pub(crate) fn set(ctx: &egui::Context, dark: bool) {
    ctx.set_theme(if dark {
        egui::Theme::Dark
    } else {
        egui::Theme::Light
    });
    // eframe picks the window's clear colour before each frame's UI runs, so the frame
    // that switches still has the old ground: draw the next one now, not at the next tick.
    ctx.request_repaint();
}
