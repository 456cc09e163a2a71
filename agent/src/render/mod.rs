//! Renderers for `underlay render`: text other systems consume. Pure: they
//! take the validated model and return text.

pub mod calico;
