//! Viewtron / TVT HTTP push source.
