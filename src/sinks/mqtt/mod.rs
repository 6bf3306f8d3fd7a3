//! MQTT sink with Home Assistant discovery.
