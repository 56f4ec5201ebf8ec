//! Models, each built from a [`VarPath`](crate::VarPath) with one table of
//! its adaptable linear paths. Decoders and vision transformers land here
//! next to BERT.

pub mod bert;
