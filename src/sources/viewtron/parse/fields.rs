//! Shared field readers: points, boxes, lines, rule items, target items, counters.

use crate::event::{Counters, Point, Rect, Rule, Target, Units};

use super::classify;
use super::xml::Node;

/// `{x, y}` (both required).
pub(crate) fn point(node: &Node<'_>) -> Option<Point> {
    Some(Point {
        x: node.child_i64("x")?,
        y: node.child_i64("y")?,
    })
}

/// `{x1, y1, x2, y2}` (all required; empty elements make the box absent).
pub(crate) fn rect_corners(node: &Node<'_>, units: Units) -> Option<Rect> {
    Some(Rect {
        x1: node.child_i64("x1")?,
        y1: node.child_i64("y1")?,
        x2: node.child_i64("x2")?,
        y2: node.child_i64("y2")?,
        units,
    })
}

/// `{x, y, width, height}` → corners (all required).
pub(crate) fn rect_xywh(node: &Node<'_>, units: Units) -> Option<Rect> {
    let x = node.child_i64("x")?;
    let y = node.child_i64("y")?;
    let w = node.child_i64("width")?;
    let h = node.child_i64("height")?;
    Some(Rect {
        x1: x,
        y1: y,
        x2: x.saturating_add(w),
        y2: y.saturating_add(h),
        units,
    })
}

/// A box in either `x1..y2` or `x/y/width/height` form.
pub(crate) fn rect_any(node: &Node<'_>, corner_units: Units, xywh_units: Units) -> Option<Rect> {
    rect_corners(node, corner_units).or_else(|| rect_xywh(node, xywh_units))
}

/// Polygon: IPC `boundary/item/point/{x,y}`, NVR `pointGroup/item/{x,y}` (either item form).
fn polygon(item: &Node<'_>) -> Vec<Point> {
    let Some(list) = item.child_any(&["pointGroup", "boundary"]) else {
        return Vec::new();
    };
    list.items()
        .filter_map(|p| p.child("point").and_then(point).or_else(|| point(p)))
        .collect()
}

/// Line in the four known shapes (protocol.md §6.2 variants A/B/C and the NVR `directionLine`).
fn line(item: &Node<'_>) -> Option<(Point, Point)> {
    let from_ends =
        |n: &Node<'_>| Some((point(n.child("startPoint")?)?, point(n.child("endPoint")?)?));
    if let Some(l) = item.child("line") {
        if let Some(ends) = from_ends(l) {
            return Some(ends); // A
        }
        if let Some(r) = rect_corners(l, Units::Norm10000) {
            return Some((Point { x: r.x1, y: r.y1 }, Point { x: r.x2, y: r.y2 })); // C
        }
    }
    if let Some(dl) = item.child("directionLine")
        && let Some(ends) = from_ends(dl)
    {
        return Some(ends); // NVR
    }
    from_ends(item) // B
}

/// One rule item (`perInfo/item`, `tripInfo/item`, `aoiInfo/item`, NVR `eventInfo/item`, …).
/// `block` is the enclosing block name (`perimeter`, `tripwire`, …) used to derive `boundary`.
/// `None` when the item carries nothing usable.
pub(crate) fn rule(item: &Node<'_>, block: Option<&str>) -> Option<Rule> {
    let polygon = polygon(item);
    let line = line(item);
    // NVR sends a word (`area` / `tripwire`); IPC uses `boundary` for the point list.
    let sent_boundary = item
        .child("boundary")
        .filter(|b| b.children().is_empty())
        .and_then(|b| b.text_opt())
        .map(str::to_owned);
    let boundary = sent_boundary.or_else(|| {
        let derived = if !polygon.is_empty() {
            Some("area")
        } else if line.is_some() {
            Some("tripwire")
        } else {
            match block.map(classify::key).as_deref() {
                Some("perimeter") => Some("area"),
                Some("tripwire") => Some("tripwire"),
                _ => None,
            }
        };
        derived.map(str::to_owned)
    });
    let direction = item
        .text_at(&["line", "Direct"])
        .or_else(|| item.child_text("Direct"))
        .map(str::to_owned);
    let rule = Rule {
        event_id: item.child_u64("eventId"),
        target_id: item.child_u64("targetId"),
        status: item.child_string("status"),
        boundary,
        polygon,
        line,
        direction,
        rect: item
            .child("rect")
            .and_then(|r| rect_corners(r, Units::Norm10000)),
    };
    let empty = rule.event_id.is_none()
        && rule.target_id.is_none()
        && rule.status.is_none()
        && rule.polygon.is_empty()
        && rule.line.is_none()
        && rule.rect.is_none();
    (!empty).then_some(rule)
}

/// A target item: `targetId`, class from `targetType` (directly or in `targetImageData`),
/// `rect`, traject `velocity`/`direction`. `None` when nothing is set.
pub(crate) fn target(item: &Node<'_>, rect_units: Units) -> Option<Target> {
    let object_raw = item
        .child_text("targetType")
        .or_else(|| item.text_at(&["targetImageData", "targetType"]));
    let target = Target {
        target_id: item.child_u64("targetId"),
        object: object_raw.and_then(classify::object_class),
        object_raw: object_raw.map(str::to_owned),
        rect: item.child("rect").and_then(|r| rect_corners(r, rect_units)),
        velocity: item.child_i64("velocity"),
        direction: item.child_i64("direction"),
    };
    (target != Target::default()).then_some(target)
}

/// Any descendant named `(enter|leave|exist)(Car|Person|Bike)Count`, outside `types`.
pub(crate) fn counters(config: &Node<'_>) -> Option<Counters> {
    let mut counters = Counters::default();
    let descend = |n: &Node<'_>| !n.is("types");
    config.walk(&descend, &mut |n| {
        let name = n.name().to_ascii_lowercase();
        let Some(rest) = name.strip_suffix("count") else {
            return;
        };
        let (bucket, class) = if let Some(c) = rest.strip_prefix("enter") {
            (&mut counters.enter, c)
        } else if let Some(c) = rest.strip_prefix("leave") {
            (&mut counters.leave, c)
        } else if let Some(c) = rest.strip_prefix("exist") {
            (&mut counters.exist, c)
        } else {
            return;
        };
        if !matches!(class, "car" | "person" | "bike") {
            return;
        }
        if let Some(v) = n.text_opt().and_then(|t| t.parse::<u64>().ok()) {
            bucket.push((class.to_owned(), v));
        }
    });
    (!counters.is_empty()).then_some(counters)
}
