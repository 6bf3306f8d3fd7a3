//! NVR-layout containers (`protocol.md` §7.3): `eventInfo`, `targetListInfo`,
//! `licensePlateListInfo`, `faceListInfo`.

use crate::event::{Attributes, FaceAttributes, Plate, Target, Units};

use super::fields;
use super::images::Collector;
use super::xml::Node;

/// Names whose presence marks the NVR layout.
pub(crate) const CONTAINERS: &[&str] = &[
    "eventInfo",
    "targetListInfo",
    "licensePlateListInfo",
    "faceListInfo",
];

/// True when `config` has any NVR container.
pub(crate) fn has_containers(config: &Node<'_>) -> bool {
    CONTAINERS.iter().any(|n| config.child(n).is_some())
}

/// Read every NVR container present in `config`.
pub(crate) fn collect(config: &Node<'_>, attrs: &mut Attributes, images: &mut Collector) {
    if let Some(events) = config.child("eventInfo") {
        attrs
            .rules
            .extend(events.items().filter_map(|i| fields::rule(i, None)));
    }
    if let Some(list) = config.child("targetListInfo") {
        for (i, item) in list.items().enumerate() {
            let target = fields::target(item, Units::Norm10000);
            let target_id = target.as_ref().and_then(|t| t.target_id);
            attrs.targets.extend(target);
            images.add_item_crop(item, target_id, "targetListInfo", i);
        }
    }
    if let Some(list) = config.child("licensePlateListInfo") {
        for (i, item) in list.items().enumerate() {
            let target_id = item.child_u64("targetId");
            if let Some(plate) = plate(item, target_id) {
                attrs.plates.push(plate);
            }
            images.add_item_crop(item, target_id, "licensePlateListInfo", i);
        }
    }
    if let Some(list) = config.child("faceListInfo") {
        for (i, item) in list.items().enumerate() {
            let target_id = item.child_u64("targetId");
            let face = FaceAttributes {
                age: item.child_string("age"),
                sex: item.child_string("sex"),
                glasses: item.child_string("glasses"),
                mask: item.child_string("mask"),
                target_id,
            };
            if face != FaceAttributes::default() {
                attrs.faces.push(face);
            }
            let target = Target {
                target_id,
                object: Some("face".to_owned()),
                object_raw: None,
                // Face boxes fit the overview's pixels (854,176,978,300 on 1280×720).
                rect: item
                    .child("rect")
                    .and_then(|r| fields::rect_corners(r, Units::Pixels)),
                velocity: None,
                direction: None,
            };
            attrs.targets.push(target);
            images.add_item_crop(item, target_id, "faceListInfo", i);
        }
    }
}

fn plate(item: &Node<'_>, target_id: Option<u64>) -> Option<Plate> {
    let attr = item.child("licensePlateAttribute");
    let number = attr
        .and_then(|a| a.child_text_any(&["licensePlateNumber", "plateNumber"]))
        .or_else(|| item.child_text_any(&["licensePlateNumber", "plateNumber"]))?;
    let matched = item.child("licensePlateMatchInfo");
    let car = item.child("carAttribute");
    let car_text = |names: &[&str]| car.and_then(|c| c.child_text_any(names)).map(str::to_owned);
    Some(Plate {
        plate: number.to_owned(),
        list: None,
        group: matched.and_then(|m| m.child_string("groupName")),
        owner: matched.and_then(|m| m.child_string("carOwner")),
        direction: None,
        confidence: None,
        plate_color: attr.and_then(|a| a.child_string("color")),
        vehicle_color: car_text(&["color"]),
        vehicle_type: car_text(&["carType", "type"]),
        vehicle_brand: car_text(&["brand"]),
        vehicle_model: car_text(&["model"]),
        plate_box: item
            .child("rect")
            .and_then(|r| fields::rect_corners(r, Units::Pixels)),
        vehicle_box: item
            .child("carRect")
            .and_then(|r| fields::rect_any(r, Units::Pixels, Units::Unknown)),
        target_id,
    })
}
