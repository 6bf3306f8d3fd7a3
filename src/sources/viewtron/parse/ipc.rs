//! IPC-layout containers (`protocol.md` §6): `listInfo`, rule blocks (`perimeter`,
//! `tripwire`, `passLineCount`, …), `vsd`, `traject`, `sourceDataInfo`.

use crate::event::{Attributes, Category, FaceAttributes, ImageRole, Plate, Units};

use super::classify;
use super::fields;
use super::images::Collector;
use super::xml::Node;

/// Direct children of `config` that are never rule blocks.
const NOT_RULE_BLOCKS: &[&str] = &[
    "types",
    "listInfo",
    "sourceDataInfo",
    "deviceInfo",
    "traject",
    "targetListInfo",
    "licensePlateListInfo",
    "faceListInfo",
    "eventInfo",
    "alarmStatusInfo",
];

/// Read every IPC container present in `config`.
pub(crate) fn collect(
    config: &Node<'_>,
    category: &Category,
    attrs: &mut Attributes,
    images: &mut Collector,
) {
    if let Some(list) = config.child("listInfo") {
        if *category == Category::Lpr {
            lpr_items(list, attrs, images);
        } else {
            target_items(list, attrs, images);
        }
    }
    rule_blocks(config, attrs);
    if let Some(vsd) = config.child("vsd") {
        vsd_block(vsd, attrs, images);
    }
    if let Some(traject) = config.child("traject") {
        attrs.targets.extend(
            traject
                .items()
                .filter_map(|i| fields::target(i, Units::Norm10000)),
        );
    }
    if let Some(source) = config.child("sourceDataInfo") {
        images.add(source, ImageRole::Overview, None, "sourceDataInfo");
    }
}

/// `listInfo/item` of non-LPR types: one target (and crop) per item.
fn target_items(list: &Node<'_>, attrs: &mut Attributes, images: &mut Collector) {
    for (i, item) in list.items().enumerate() {
        let target = fields::target(item, Units::Norm10000);
        let target_id = target.as_ref().and_then(|t| t.target_id);
        if let Some(t) = target {
            attrs.targets.push(t);
        }
        // Face attributes on VFD items (third-party receivers read age/sex here).
        let face = FaceAttributes {
            age: item.child_string("age"),
            sex: item.child_string("sex"),
            glasses: item.child_string("glasses"),
            mask: item.child_string("mask"),
            target_id,
        };
        if face.age.is_some() || face.sex.is_some() || face.glasses.is_some() || face.mask.is_some()
        {
            attrs.faces.push(face);
        }
        images.add_item_crop(item, target_id, "listInfo", i);
    }
}

/// `listInfo/item` of `VEHICE`: overview item, plate items (protocol.md §6.7).
fn lpr_items(list: &Node<'_>, attrs: &mut Attributes, images: &mut Collector) {
    let items: Vec<&Node<'_>> = list.items().collect();
    let positional_overview = items.len() >= 2;
    for (i, item) in items.iter().enumerate() {
        let role = match item.child_u64("image") {
            Some(0) => ImageRole::Overview,
            Some(_) => ImageRole::Target,
            None if positional_overview && i == 0 => ImageRole::Overview,
            None => ImageRole::Target,
        };
        let target_id = item
            .child_u64("vehiceId")
            .or_else(|| item.child_u64("targetId"));
        if let Some(plate) = ipc_plate(item, target_id) {
            attrs.plates.push(plate);
        }
        if let Some(data) = item.child("targetImageData") {
            let label = format!("listInfo/item[{}]", i + 1);
            let id = if role == ImageRole::Target {
                target_id
            } else {
                None
            };
            images.add(data, role, id, &label);
        }
    }
}

fn count_attr(item: &Node<'_>, name: &str) -> Option<String> {
    let node = item.child(name)?;
    node.attr("count")
        .or_else(|| node.text_opt())
        .map(str::to_owned)
}

fn ipc_plate(item: &Node<'_>, target_id: Option<u64>) -> Option<Plate> {
    let plate = item.child_text("plateNumber")?.to_owned();
    let list = item.child_string("vehicleListType");
    let car = item.child("carAttr");
    let car_text = |name: &str| car.and_then(|c| c.child_string(name));
    Some(Plate {
        plate,
        group: list.clone(),
        list,
        owner: item.child_string("carOwner"),
        direction: item
            .child_text("vehicleDirect")
            .and_then(classify::plate_direction),
        confidence: count_attr(item, "PlateConfidence")
            .and_then(|c| c.parse::<f64>().ok())
            .filter(|c| c.is_finite())
            .map(|c| c / 100.0),
        plate_color: count_attr(item, "plateColor"),
        vehicle_color: car_text("color"),
        vehicle_type: car_text("type"),
        vehicle_brand: car_text("brand"),
        vehicle_model: car_text("model"),
        plate_box: corners_box(item),
        vehicle_box: item
            .child("carRect")
            .and_then(|r| fields::rect_any(r, Units::Pixels, Units::Unknown)),
        target_id,
    })
}

/// Plate box from the four corners (0–10000); all-zero corners mean "no box".
fn corners_box(item: &Node<'_>) -> Option<crate::event::Rect> {
    let points: Vec<_> = ["leftTop", "rightTop", "leftBottom", "rightBottom"]
        .iter()
        .filter_map(|n| item.child(n).and_then(fields::point))
        .collect();
    if points.is_empty() || points.iter().all(|p| p.x == 0 && p.y == 0) {
        return None;
    }
    Some(crate::event::Rect {
        x1: points.iter().map(|p| p.x).min()?,
        y1: points.iter().map(|p| p.y).min()?,
        x2: points.iter().map(|p| p.x).max()?,
        y2: points.iter().map(|p| p.y).max()?,
        units: Units::Norm10000,
    })
}

/// `perimeter/perInfo`, `tripwire/tripInfo`, `passLineCount/aoiInfo`, and any other
/// `<block>/<…Info>/item` list (AOI, LOITER, PVD, unknown types).
fn rule_blocks(config: &Node<'_>, attrs: &mut Attributes) {
    for block in config.children() {
        if NOT_RULE_BLOCKS.iter().any(|n| block.is(n)) {
            continue;
        }
        for list in block.children() {
            if !list.name().to_ascii_lowercase().ends_with("info") {
                continue;
            }
            attrs.rules.extend(
                list.items()
                    .filter_map(|i| fields::rule(i, Some(block.name()))),
            );
        }
    }
}

/// `vsd/{sourceDataInfo, targetImageData}` (images live inside the block).
fn vsd_block(vsd: &Node<'_>, attrs: &mut Attributes, images: &mut Collector) {
    if let Some(source) = vsd.child("sourceDataInfo") {
        images.add(source, ImageRole::Overview, None, "vsd/sourceDataInfo");
    }
    for (i, data) in vsd.children_named("targetImageData").enumerate() {
        if let Some(t) = fields::target(data, Units::Norm10000) {
            attrs.targets.push(t);
        }
        if let Some(person) = data.child("personAttr") {
            let face = FaceAttributes {
                age: person.child_string("age"),
                sex: person.child_string("sex"),
                glasses: person.child_string("glasses"),
                mask: person.child_string("mask"),
                target_id: None,
            };
            if face != FaceAttributes::default() {
                attrs.faces.push(face);
            }
        }
        images.add(
            data,
            ImageRole::Target,
            None,
            &format!("vsd/targetImageData[{}]", i + 1),
        );
    }
}
