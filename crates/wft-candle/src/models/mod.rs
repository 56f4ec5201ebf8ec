//! Models, each built from a [`VarPath`](crate::VarPath) with one table of
//! its adaptable linear paths: [`bert`] (an encoder) and [`llama`] (a
//! Llama-family decoder, loaded from GGUF).

pub mod bert;
pub mod llama;
mod ops;
