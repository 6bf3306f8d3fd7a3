//! The generic enumerator (pure): what a device has shown ([`DeviceCaps`]) becomes its list of
//! [`Entity`]s; the bridge device's own entities likewise. Names, device classes and event
//! types come from the [`catalog`]; topics from [`Topics`]; ids from the [`Owner`].
//!
//! A source that produces a category the catalog knows gets that category's entities without
//! any change here: the pipeline's device registry records the category (and its image roles
//! and counters) in [`DeviceCaps`], and this module turns every recorded category into the
//! same set.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::catalog::{self, BRIDGE_SENSORS, COUNTER_ICON};
use super::{
    Availability, BinaryClass, BinarySensor, Button, DeviceTrigger, Entity, EventEntity, Image,
    Owner, Sensor, SensorClass, StateClass,
};
use crate::sinks::mqtt::topics::{Topics, alarm_key, counter_key, slug};

pub use crate::event::{AlarmEntity, CategoryCaps, DeviceCaps};

/// `off_delay` of each category's binary sensor (configured per category name, else the
/// default) and of the object labels' binary sensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffDelays {
    /// Per category name.
    pub per_category: BTreeMap<String, Duration>,
    /// For the others.
    pub default: Duration,
    /// For every "<Label> detected" sensor (`[detector] off_delay`).
    pub objects: Duration,
}

impl OffDelays {
    /// Whole seconds for `category`, at least 1.
    pub fn seconds(&self, category: &str) -> u64 {
        let d = self.per_category.get(category).unwrap_or(&self.default);
        d.as_secs().max(1)
    }

    /// Whole seconds for the object labels' binary sensors, at least 1.
    pub fn object_seconds(&self) -> u64 {
        self.objects.as_secs().max(1)
    }
}

/// All entities of device `device_id` with capabilities `caps`, in this order: its
/// connectivity; per category (by name) a binary sensor, an event entity, an image per role
/// seen, a last-event timestamp, the category's extra sensors, a sensor per counter, a device
/// trigger; per alarm entity a binary sensor; per object label ([`DeviceCaps::objects`]) a
/// binary sensor and a count sensor.
pub fn device_entities(
    owner: &Owner,
    topics: &Topics,
    device_id: &str,
    caps: &DeviceCaps,
    off_delays: &OffDelays,
) -> Vec<Entity> {
    let bridge_only = vec![Availability::new(topics.bridge_state())];
    let connectivity = owner
        .common::<BinarySensor>("connectivity", "Connectivity")
        .with_availability(bridge_only);
    let mut out = vec![Entity::BinarySensor(BinarySensor::connectivity(
        connectivity,
        topics.availability(device_id),
    ))];
    for (name, cc) in &caps.categories {
        let topic = |leaf: &str| topics.device_cat(device_id, name, leaf);
        category_entities(owner, topic, name, cc, off_delays.seconds(name), &mut out);
    }
    for a in &caps.alarms {
        let id = a.id.as_deref();
        let key = format!("alarm_status_{}", slug(&alarm_key(&a.name, id)));
        let common = owner.common::<BinarySensor>(&key, &catalog::alarm_label(&a.name, id));
        let state_topic = topics.alarm(device_id, &a.name, id);
        out.push(Entity::BinarySensor(BinarySensor::on_off(
            common,
            state_topic,
        )));
    }
    let taken: BTreeSet<String> = out.iter().map(|e| e.key().to_owned()).collect();
    for (key, label) in caps.objects() {
        let entities = object_entities(owner, topics, device_id, &key, &label, off_delays);
        out.extend(entities.into_iter().filter(|e| !taken.contains(e.key())));
    }
    out
}

/// The entities of one object label (key [`crate::event::caps::object_key`], readable
/// `label`): "<Label> detected", a binary sensor of device class `occupancy` on
/// `<base>/<device>/objects/<key>/state` with the objects' `off_delay` (as Frigate's object
/// sensors), and "<Label> count", a `measurement` sensor on `…/objects/<key>/count`. Their
/// component keys are `<key>_detected` and `<key>_count` ([`device_entities`] leaves out one
/// that another entity of the device already has, a category named `person_detected`, rather
/// than replace it).
fn object_entities(
    owner: &Owner,
    topics: &Topics,
    device_id: &str,
    key: &str,
    label: &str,
    off_delays: &OffDelays,
) -> [Entity; 2] {
    let (detected_name, count_name) = catalog::object_names(label);
    let mut binary = BinarySensor::on_off(
        owner.common::<BinarySensor>(&format!("{key}_detected"), &detected_name),
        topics.object(device_id, key, "state"),
    );
    binary.device_class = Some(BinaryClass::Occupancy);
    binary.off_delay = Some(off_delays.object_seconds());
    let common = owner
        .common::<Sensor>(&format!("{key}_count"), &count_name)
        .with_icon(catalog::object_icon(key));
    let count = Sensor::new(common, topics.object(device_id, key, "count"))
        .state_class(Some(StateClass::Measurement));
    [Entity::BinarySensor(binary), Entity::Sensor(count)]
}

/// The entities of category `name` (see [`device_entities`]); `topic(leaf)` is the
/// category's topic `<base>/<device>/<name>/<leaf>`.
fn category_entities(
    owner: &Owner,
    topic: impl Fn(&str) -> String,
    name: &str,
    cc: &CategoryCaps,
    off_delay: u64,
    out: &mut Vec<Entity>,
) {
    let key = slug(name);
    let names = catalog::names(&cc.category);
    let event_type = catalog::event_type(&cc.category);

    let mut binary = BinarySensor::on_off(
        owner.common::<BinarySensor>(&key, &names.binary),
        topic("state"),
    );
    binary.device_class = catalog::binary_class(&cc.category);
    binary.off_delay = Some(off_delay);
    out.push(Entity::BinarySensor(binary));

    let common = owner.common::<EventEntity>(&format!("{key}_event"), &names.event);
    out.push(Entity::Event(EventEntity::new(
        common,
        topic("event"),
        event_type,
    )));

    // The role is the key suffix and the topic leaf.
    for (seen, role, image_name) in [
        (cc.overview, "image", &names.image),
        (cc.target, "target", &names.target),
        (cc.annotated, "annotated", &names.annotated),
    ] {
        if seen {
            let common = owner.common::<Image>(&format!("{key}_{role}"), image_name);
            out.push(Entity::Image(Image::new(
                common,
                topic(role),
                cc.content_type,
            )));
        }
    }

    let common = owner
        .common::<Sensor>(&format!("{key}_last"), &names.last)
        .diagnostic();
    out.push(Entity::Sensor(
        Sensor::new(common, topic("last")).class(SensorClass::Timestamp),
    ));

    for s in catalog::extra_sensors(&cc.category) {
        let mut common = owner.common::<Sensor>(s.key, s.name);
        common.icon = s.icon;
        out.push(Entity::Sensor(
            Sensor::new(common, topic(s.leaf)).state_class(s.state_class),
        ));
    }

    for (dir, class) in &cc.counters {
        let ck = counter_key(dir, class);
        let common = owner
            .common::<Sensor>(
                &format!("{key}_{}", slug(&ck)),
                &catalog::counter_name(dir, class),
            )
            .with_icon(COUNTER_ICON);
        let state_class = Some(catalog::counter_state_class(dir));
        out.push(Entity::Sensor(
            Sensor::new(common, topic(&ck)).state_class(state_class),
        ));
    }

    out.push(Entity::DeviceTrigger(DeviceTrigger::on_event(
        &format!("{key}_trigger"),
        topic("event"),
        event_type,
        name,
    )));
}

/// The "Take snapshot" button of a device the bridge can take snapshots of (a `[[poll]]`
/// camera): it publishes `PRESS` to `<base>/<device>/snapshot/take`.
pub fn snapshot_button(owner: &Owner, topics: &Topics, device_id: &str) -> Entity {
    let common = owner
        .common::<Button>("snapshot_take", "Take snapshot")
        .with_icon("mdi:camera");
    Entity::Button(Button::new(common, topics.snapshot_take(device_id)))
}

/// The bridge device's entities: its connectivity (without availability, so it can show
/// `offline`) and the diagnostic sensors of [`BRIDGE_SENSORS`] on `<base>/bridge/info`.
pub fn bridge_entities(owner: &Owner, topics: &Topics) -> Vec<Entity> {
    let connectivity = owner.common::<BinarySensor>("connectivity", "Connectivity");
    let mut out = vec![Entity::BinarySensor(BinarySensor::connectivity(
        connectivity,
        topics.bridge_state(),
    ))];
    for s in BRIDGE_SENSORS {
        let common = owner
            .common::<Sensor>(s.key, s.name)
            .diagnostic()
            .with_icon(s.icon)
            .with_availability(vec![Availability::new(topics.bridge_state())]);
        let sensor = Sensor::new(common, topics.bridge_info())
            .template(s.template)
            .state_class(s.state_class);
        out.push(Entity::Sensor(sensor));
    }
    out
}
