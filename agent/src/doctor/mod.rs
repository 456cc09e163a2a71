//! `underlay doctor`: read-only checks of a live host against the failure
//! modes of FIELD-NOTES.md, each with a severity, its evidence and the fix.
