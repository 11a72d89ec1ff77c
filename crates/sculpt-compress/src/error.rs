//! The one error type of sculpt-compress.

#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error(transparent)]
    Nn(#[from] sculpt_nn::NnError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("layer `{layer}`: {message}")]
    Layer { layer: String, message: String },
    #[error("invalid compression plan: {0}")]
    Plan(String),
    /// A mistake in a plan file: the message names the file and the field.
    #[error("{0}")]
    PlanFile(String),
}

pub type Result<T> = std::result::Result<T, CompressError>;

pub(crate) fn layer_error(layer: &str, message: impl Into<String>) -> CompressError {
    CompressError::Layer {
        layer: layer.to_string(),
        message: message.into(),
    }
}

/// The node named `layer`, or an error that lists the model's weight layers.
pub(crate) fn weight_node<'a>(
    graph: &'a sculpt_nn::Graph,
    layer: &str,
) -> Result<&'a sculpt_nn::Node> {
    graph.spec.node(layer).ok_or_else(|| {
        layer_error(
            layer,
            format!(
                "is not a node of model `{}` (weight layers: {})",
                graph.spec.name,
                graph.spec.weight_layers().join(", ")
            ),
        )
    })
}
