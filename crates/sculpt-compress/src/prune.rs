//! Structured pruning: whole output channels of convolutions and whole neurons of Linear
//! layers are removed, so the result is a smaller dense network that runs faster on any
//! kernel. Channels do not stand alone. As in Torch-Pruning's DepGraph, the layers whose
//! outputs meet in a residual sum must lose the same channels, and so must everything that
//! reads those channels: batch norms, depthwise convolutions (with their own batch norms),
//! the input channels of the next convolution and the input features of a Linear layer
//! after flattening (`h·w` features per channel) or global pooling (one per channel). This
//! module owns that dependency analysis ([`dependency_groups`]), the channel importance
//! criteria (L1, L2, batch-norm γ, first-order Taylor), ranking within a group or across
//! the network, and the pass that cuts the graph ([`prune_channels`]).

use std::collections::BTreeMap;

use candle_core::{Tensor, Var};
use sculpt_nn::graph::INPUT;
use sculpt_nn::{ChannelRule, Dataset, Graph, Node, Op};

use crate::error::{layer_error, CompressError, Result};
/// The importance criteria are the plan's own enum, so a plan's `prune.importance` passes
/// straight through to the pass.
pub use crate::plan::Importance;

/// A slice of one parameter that follows a group's channels: channel `c` owns the indices
/// `c * expansion .. (c + 1) * expansion` along dimension `dim`. Dimension 0 slices carry
/// the channel's values (the producers' rows and biases, batch norms, depthwise filters);
/// dimension 1 slices read them (the next layer's input channels or features).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSlice {
    pub param: String,
    pub dim: usize,
    pub expansion: usize,
}

/// A layer that reads a group's channels as its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub layer: String,
    /// Input features per channel: `h·w` for a Linear layer after a flatten, 1 otherwise.
    pub expansion: usize,
}

/// A set of channels that must be pruned together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneGroup {
    /// The first member in node order; ratios and kept-channel maps are keyed by it.
    pub name: String,
    /// The layers (Linear, or Conv2d with one group) whose output channels are tied, in
    /// node order: e.g. both convolutions whose outputs meet in a residual sum, or, through
    /// an identity shortcut, the layer that produced the block's input.
    pub members: Vec<String>,
    pub channels: usize,
    /// Batch norms over these channels (of the members and of the depthwise convolutions).
    pub batch_norms: Vec<String>,
    /// Depthwise convolutions that filter these channels one by one.
    pub depthwise: Vec<String>,
    /// Layers whose input is these channels.
    pub consumers: Vec<Consumer>,
    /// Every parameter slice that follows the channels, in node order.
    pub slices: Vec<ParamSlice>,
    /// Why the group cannot be pruned (it is the network's output, it is tied to the
    /// network's input, a grouped convolution ties it in blocks), or `None`.
    pub blocked: Option<String>,
}

impl PruneGroup {
    pub fn is_prunable(&self) -> bool {
        self.blocked.is_none()
    }
}

/// Whether channels are ranked within each group or across the network.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Scope {
    /// Each group loses its own ratio of channels, ranked within the group.
    #[default]
    Local,
    /// Channels of several groups compete for removal on scores normalised by each group's
    /// mean score, under one threshold, so groups of unimportant channels lose more. With
    /// `ratio: Some(r)`, every prunable group competes and `r` of all their channels are
    /// removed (`ratios` must then be empty). With `ratio: None`, the groups named in
    /// `ratios` compete and together lose as many channels as local pruning at those
    /// ratios would remove.
    Global { ratio: Option<f64> },
}

/// Settings of one structured-pruning pass.
#[derive(Debug, Clone)]
pub struct PruneSettings<'a> {
    /// Fraction of channels to remove, in [0, 1), by layer name. A ratio addressed to any
    /// member of a group applies to the whole group; when members of one group are given
    /// different ratios, the largest one applies.
    pub ratios: BTreeMap<String, f64>,
    pub importance: Importance,
    pub scope: Scope,
    /// Channels every pruned group keeps at least (at least 1).
    pub min_channels: usize,
    /// Precomputed |gradient × weight| scores by parameter name ([`taylor_scores`]);
    /// required by [`Importance::Taylor`], ignored otherwise.
    pub taylor: Option<&'a BTreeMap<String, Tensor>>,
}

impl Default for PruneSettings<'_> {
    fn default() -> Self {
        PruneSettings {
            ratios: BTreeMap::new(),
            importance: Importance::L1,
            scope: Scope::Local,
            min_channels: 1,
            taylor: None,
        }
    }
}

impl PruneSettings<'_> {
    /// L1 importance, local ranking, at least one channel kept: what [`prune`] does.
    pub fn local(ratios: BTreeMap<String, f64>) -> Self {
        PruneSettings {
            ratios,
            ..PruneSettings::default()
        }
    }
}

/// Union-find over the graph's values; graphs are small, so no path compression.
struct DisjointSets {
    parent: Vec<usize>,
}

impl DisjointSets {
    fn new(n: usize) -> Self {
        DisjointSets {
            parent: (0..n).collect(),
        }
    }

    fn find(&self, mut i: usize) -> usize {
        while self.parent[i] != i {
            i = self.parent[i];
        }
        i
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra.max(rb)] = ra.min(rb);
        }
    }
}

/// How `op`'s channels relate to its inputs' (the op's own definition says).
fn rule(op: &Op) -> ChannelRule {
    op.def().channels()
}

/// The local names of `op`'s tensors that are per channel along dimension 0 (a producer's
/// weight and bias, a batch norm's parameters and statistics, a depthwise filter).
fn per_channel_params(op: &Op) -> Vec<&'static str> {
    op.def().params().iter().map(|p| p.name).collect()
}

/// The channel groups of `graph`, ordered by their first member, blocked ones included.
///
/// Every value of the graph (the input and each node's output) is placed in a channel
/// space; ops that keep channel `c` at index `c` (ReLU, dropout, pooling, batch norm,
/// flatten, depthwise convolution) and residual sums join the spaces of their inputs and
/// output. Linear layers and ungrouped convolutions start a new space: they are the
/// members whose output rows can be chosen, and they read their input space through their
/// weight's dimension 1. A flatten maps channel `c` of a `[c, h, w]` value to features
/// `c·h·w .. (c+1)·h·w`, so the Linear layer after it follows in blocks of `h·w` columns.
pub fn dependency_groups(graph: &Graph) -> Result<Vec<PruneGroup>> {
    let spec = &graph.spec;
    let rows = spec.summarize()?;
    let nodes = &spec.nodes;
    // Value 0 is the graph's input, value i + 1 the output of node i.
    let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(nodes.len() + 1);
    shapes.push(spec.input_shape.clone());
    shapes.extend(rows.iter().map(|r| r.output_shape.clone()));
    let mut value_of: BTreeMap<&str, usize> = BTreeMap::new();
    value_of.insert(INPUT, 0);
    for (i, node) in nodes.iter().enumerate() {
        value_of.insert(node.name.as_str(), i + 1);
    }
    // `summarize` has checked that every input names an earlier value.
    let input_of = |node: &Node, k: usize| value_of[node.inputs[k].as_str()];

    let mut sets = DisjointSets::new(nodes.len() + 1);
    let mut tied_in_blocks: Vec<(usize, String)> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let (output, input) = (i + 1, input_of(node, 0));
        match rule(&node.op) {
            ChannelRule::Produce => {}
            ChannelRule::Depthwise | ChannelRule::Follow => sets.union(output, input),
            ChannelRule::Blocked(why) => {
                // Each block of input channels feeds its own block of outputs, so removing
                // one channel would break the block structure: leave both sides alone.
                let reason = format!("`{}` ({}): {why}", node.name, node.op.kind());
                tied_in_blocks.push((input, reason.clone()));
                tied_in_blocks.push((output, reason));
            }
            ChannelRule::Join => {
                for k in 0..node.inputs.len() {
                    sets.union(output, input_of(node, k));
                }
            }
        }
    }

    // One group per channel space that has a member, created in node order.
    let mut group_of_root: BTreeMap<usize, usize> = BTreeMap::new();
    let mut groups: Vec<PruneGroup> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        if rule(&node.op) != ChannelRule::Produce {
            continue;
        }
        let root = sets.find(i + 1);
        let g = *group_of_root.entry(root).or_insert_with(|| {
            groups.push(PruneGroup {
                name: node.name.clone(),
                members: Vec::new(),
                channels: 0,
                batch_norms: Vec::new(),
                depthwise: Vec::new(),
                consumers: Vec::new(),
                slices: Vec::new(),
                blocked: None,
            });
            groups.len() - 1
        });
        groups[g].members.push(node.name.clone());
    }
    // A group's channel count is that of its image-shaped values, else its neurons'.
    for (&root, &g) in &group_of_root {
        let values: Vec<usize> = (0..shapes.len())
            .filter(|&v| sets.find(v) == root)
            .collect();
        let image = values.iter().find(|&&v| shapes[v].len() == 3);
        let channels = match image {
            Some(&v) => shapes[v][0],
            None => shapes[value_of[groups[g].members[0].as_str()]][0],
        };
        groups[g].channels = channels;
        for &v in &values {
            let consistent = match shapes[v].as_slice() {
                [c, _, _] => *c == channels,
                [features] => channels > 0 && features % channels == 0,
                _ => false,
            };
            if !consistent && groups[g].blocked.is_none() {
                let what = if v == 0 {
                    INPUT
                } else {
                    nodes[v - 1].name.as_str()
                };
                groups[g].blocked = Some(format!(
                    "`{what}` (shape {:?}) does not lay out {channels} channels one after another",
                    shapes[v]
                ));
            }
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        let n = &node.name;
        let own = group_of_root.get(&sets.find(i + 1)).copied();
        let read = group_of_root.get(&sets.find(input_of(node, 0))).copied();
        match rule(&node.op) {
            ChannelRule::Produce => {
                if let Some(g) = own {
                    let group = &mut groups[g];
                    for p in per_channel_params(&node.op) {
                        group.slices.push(slice(format!("{n}.{p}"), 0, 1));
                    }
                    // A Linear member whose width is not the group's channel count (its
                    // output is summed with a flattened image) would need its rows cut
                    // in blocks; that is not supported.
                    if shapes[i + 1] != vec![group.channels] && shapes[i + 1].len() == 1 {
                        group.blocked.get_or_insert_with(|| {
                            format!("`{n}` adds its neurons to flattened channels")
                        });
                    }
                }
                if let Some(g) = read {
                    let group = &mut groups[g];
                    // Each input channel is `expansion` consecutive columns of the weight:
                    // one for a convolution, h·w for a Linear layer after a flatten.
                    let columns = shapes[input_of(node, 0)].iter().product::<usize>();
                    let expansion = if shapes[input_of(node, 0)].len() == 1 {
                        columns / group.channels.max(1)
                    } else {
                        1
                    };
                    group.consumers.push(Consumer {
                        layer: n.clone(),
                        expansion,
                    });
                    group
                        .slices
                        .push(slice(format!("{n}.weight"), 1, expansion));
                }
            }
            ChannelRule::Depthwise => {
                if let Some(g) = own {
                    let group = &mut groups[g];
                    group.depthwise.push(n.clone());
                    for p in per_channel_params(&node.op) {
                        group.slices.push(slice(format!("{n}.{p}"), 0, 1));
                    }
                }
            }
            ChannelRule::Follow => {
                let params = per_channel_params(&node.op);
                if let (Some(g), false) = (own, params.is_empty()) {
                    let group = &mut groups[g];
                    group.batch_norms.push(n.clone());
                    for p in params {
                        group.slices.push(slice(format!("{n}.{p}"), 0, 1));
                    }
                }
            }
            ChannelRule::Join | ChannelRule::Blocked(_) => {}
        }
    }
    // Reasons in order of what a user most needs to hear.
    let output_root = sets.find(value_of[spec.output.as_str()]);
    let input_root = sets.find(0);
    for (&root, &g) in &group_of_root {
        let group = &mut groups[g];
        let reason = if root == output_root {
            Some(format!(
                "its outputs are the network's output `{}` ({} classes)",
                spec.output, spec.num_classes
            ))
        } else if root == input_root {
            Some("its channels are tied to the network's input".to_string())
        } else {
            tied_in_blocks
                .iter()
                .find(|(v, _)| sets.find(*v) == root)
                .map(|(_, reason)| reason.clone())
        };
        if let Some(reason) = reason {
            group.blocked = Some(reason);
        }
    }
    Ok(groups)
}

fn slice(param: String, dim: usize, expansion: usize) -> ParamSlice {
    ParamSlice {
        param,
        dim,
        expansion,
    }
}

/// Linear and Conv2d layers that head a prunable group, in node order: one entry per
/// group, so a search has one prune knob per set of tied channels. The other members of a
/// group (e.g. a projection shortcut) are accepted by [`prune_channels`] too.
pub fn prunable_layers(graph: &Graph) -> Vec<String> {
    // A graph that fails its own shape check has nothing to offer a search.
    dependency_groups(graph)
        .map(|groups| {
            groups
                .into_iter()
                .filter(PruneGroup::is_prunable)
                .map(|g| g.name)
                .collect()
        })
        .unwrap_or_default()
}

/// The index of the group `layer` is a member of, or an error that says why the layer
/// has no channels of its own to prune.
fn group_index(graph: &Graph, groups: &[PruneGroup], layer: &str) -> Result<usize> {
    let node = graph.spec.node(layer).ok_or_else(|| {
        layer_error(
            layer,
            format!("no such layer in model `{}`", graph.spec.name),
        )
    })?;
    if let Some(g) = groups
        .iter()
        .position(|g| g.members.iter().any(|m| m == layer))
    {
        return match &groups[g].blocked {
            None => Ok(g),
            Some(reason) => Err(layer_error(layer, format!("cannot be pruned: {reason}"))),
        };
    }
    if rule(&node.op) == ChannelRule::Depthwise {
        let owner = groups
            .iter()
            .find(|g| g.depthwise.iter().any(|d| d == layer))
            .map_or_else(|| "its input".to_string(), |g| format!("`{}`", g.name));
        return Err(layer_error(
            layer,
            format!(
                "cannot be pruned on its own: a depthwise convolution keeps the channels of \
                 its input; prune {owner} instead"
            ),
        ));
    }
    if let ChannelRule::Blocked(why) = rule(&node.op) {
        return Err(layer_error(layer, format!("cannot be pruned: {why}")));
    }
    Err(layer_error(
        layer,
        format!(
            "cannot be pruned: it is a {} layer; only Linear and Conv2d layers have channels of their own",
            node.op.kind()
        ),
    ))
}

/// One score per output row of a weight: the L1 or L2 norm of the row, or the sum of a
/// precomputed per-weight score.
fn row_scores(weight: &Tensor, importance: Importance) -> Result<Vec<f32>> {
    let rows = weight.flatten_from(1)?;
    let per_row = match importance {
        Importance::L2 => rows.sqr()?.sum(1)?.sqrt()?,
        _ => rows.abs()?.sum(1)?,
    };
    Ok(per_row.to_vec1()?)
}

/// The batch norm that reads `layer`'s output directly, if any.
fn batch_norm_after<'g>(graph: &'g Graph, layer: &str) -> Option<&'g str> {
    graph
        .spec
        .nodes
        .iter()
        .find(|n| matches!(n.op, Op::BatchNorm2d { .. }) && n.inputs[0] == layer)
        .map(|n| n.name.as_str())
}

/// The importance of each channel of `group`, computed on `graph`'s weights.
///
/// - L1 and L2: the norm of each member's weight row for the channel, summed over the
///   members.
/// - BnGamma: |γ| of the batch norm directly after each member, summed over the members.
///   If any member has no such batch norm (Linear neurons, LeNet's convolutions), the
///   group falls back to L1, so a group is never scored on a mix of the two scales.
/// - Taylor: the precomputed |gradient × weight| ([`taylor_scores`]) summed over each
///   member's weight row, summed over the members.
pub fn channel_scores(
    graph: &Graph,
    group: &PruneGroup,
    importance: Importance,
    taylor: Option<&BTreeMap<String, Tensor>>,
) -> Result<Vec<f64>> {
    let mut scores = vec![0f64; group.channels];
    let mut add = |from: &str, per_channel: Vec<f32>| -> Result<()> {
        if per_channel.len() != scores.len() {
            return Err(layer_error(
                from,
                format!(
                    "has {} channels where its group `{}` has {}",
                    per_channel.len(),
                    group.name,
                    scores.len()
                ),
            ));
        }
        for (s, v) in scores.iter_mut().zip(per_channel) {
            *s += v as f64;
        }
        Ok(())
    };
    match importance {
        Importance::L1 | Importance::L2 => {
            for member in &group.members {
                let weight = graph.param(&format!("{member}.weight"))?;
                add(member, row_scores(weight, importance)?)?;
            }
        }
        Importance::BnGamma => {
            let norms: Option<Vec<&str>> = group
                .members
                .iter()
                .map(|m| batch_norm_after(graph, m))
                .collect();
            let Some(norms) = norms else {
                return channel_scores(graph, group, Importance::L1, None);
            };
            for bn in norms {
                let gamma = graph.param(&format!("{bn}.weight"))?;
                add(bn, gamma.abs()?.to_vec1()?)?;
            }
        }
        Importance::Taylor => {
            let taylor = taylor.ok_or_else(|| {
                CompressError::Plan(
                    "Taylor importance needs gradient scores from calibration data \
                     (see `taylor_scores`)"
                        .into(),
                )
            })?;
            for member in &group.members {
                let name = format!("{member}.weight");
                let weight = graph.param(&name)?;
                let score = taylor.get(&name).ok_or_else(|| {
                    layer_error(member, format!("the Taylor scores have no entry `{name}`"))
                })?;
                if score.dims() != weight.dims() {
                    return Err(layer_error(
                        member,
                        format!(
                            "the Taylor scores of `{name}` have shape {:?}, the weight {:?}",
                            score.dims(),
                            weight.dims()
                        ),
                    ));
                }
                add(member, row_scores(score, Importance::L1)?)?;
            }
        }
    }
    Ok(scores)
}

/// First-order Taylor scores `|∂L/∂w ⊙ w|` of every trainable parameter, by name. The
/// gradient is that of the cross-entropy summed over the first `batches · batch_size`
/// samples of `data` (fewer if `data` is smaller), taken in `batches` batches in
/// evaluation mode, so the scores are deterministic. As in Torch-Pruning, gradients are
/// accumulated over the batches before the product is taken.
pub fn taylor_scores(
    graph: &Graph,
    data: &Dataset,
    batches: usize,
    batch_size: usize,
) -> Result<BTreeMap<String, Tensor>> {
    if batches == 0 || batch_size == 0 {
        return Err(CompressError::Plan(format!(
            "Taylor importance needs at least one calibration batch of at least one sample, \
             got {batches} batches of {batch_size}"
        )));
    }
    if data.is_empty() {
        return Err(CompressError::Plan(
            "Taylor importance needs calibration data, and the dataset is empty".into(),
        ));
    }
    if data.sample_shape() != graph.spec.input_shape {
        return Err(CompressError::Plan(format!(
            "the calibration samples have shape {:?}, model `{}` takes {:?}",
            data.sample_shape(),
            graph.spec.name,
            graph.spec.input_shape
        )));
    }
    let vars: BTreeMap<&str, Var> = graph
        .params
        .iter()
        .filter(|(name, _)| !sculpt_nn::GraphSpec::is_buffer(name))
        .map(|(name, t)| Ok((name.as_str(), Var::from_tensor(t)?)))
        .collect::<Result<_>>()?;
    let lookup = |name: &str| -> sculpt_nn::Result<Tensor> {
        match vars.get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => Ok(graph.param(name)?.clone()),
        }
    };
    let samples = (batches * batch_size).min(data.len());
    let mut gradients: BTreeMap<&str, Tensor> = BTreeMap::new();
    let mut start = 0;
    while start < samples {
        let len = batch_size.min(samples - start);
        let x = data.x.narrow(0, start, len)?;
        let y = data.y.narrow(0, start, len)?;
        let logits = graph.forward_with(&x, &lookup)?;
        // The batch mean times the batch size: a short last batch weighs what it holds.
        let loss = (candle_nn::loss::cross_entropy(&logits, &y)? * len as f64)?;
        let grads = loss.backward()?;
        for (name, var) in &vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                let total = match gradients.remove(name) {
                    Some(sum) => (sum + g)?,
                    None => g.clone(),
                };
                gradients.insert(*name, total);
            }
        }
        start += len;
    }
    let mut scores = BTreeMap::new();
    for (name, var) in &vars {
        let score = match gradients.get(name) {
            Some(g) => (g * var.as_tensor())?.abs()?,
            // A parameter the loss does not reach has no first-order effect.
            None => var.as_tensor().zeros_like()?,
        };
        scores.insert(name.to_string(), score);
    }
    Ok(scores)
}

/// Channels to remove from a group of `channels` at `ratio`: rounded down, with a small
/// tolerance so that 0.29 of 100 is 29 despite floating point.
fn removal_count(channels: usize, ratio: f64) -> usize {
    ((channels as f64) * ratio + 1e-9).floor() as usize
}

/// The `keep` highest-scoring indices, ascending; among equal scores the lower index stays.
fn keep_highest(scores: &[f64], keep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut kept = order[..keep.min(scores.len())].to_vec();
    kept.sort_unstable();
    kept
}

/// The channels each group keeps, ascending, by group name, for every group the settings
/// address (a group may keep all its channels). Ranking uses `graph`'s weights only, so
/// the result does not depend on the order in which groups are pruned.
pub fn select_channels(
    graph: &Graph,
    settings: &PruneSettings,
) -> Result<BTreeMap<String, Vec<usize>>> {
    if settings.min_channels == 0 {
        return Err(CompressError::Plan(
            "min_channels must be at least 1: a group without channels cuts the network".into(),
        ));
    }
    let groups = dependency_groups(graph)?;
    let mut ratio_of: BTreeMap<usize, f64> = BTreeMap::new();
    for (layer, &ratio) in &settings.ratios {
        if !(0.0..1.0).contains(&ratio) {
            return Err(layer_error(
                layer,
                format!("prune ratio {ratio} is not in [0, 1)"),
            ));
        }
        if ratio == 0.0 {
            // Asks for nothing, so any existing layer may carry it.
            if graph.spec.node(layer).is_none() {
                group_index(graph, &groups, layer)?;
            }
            continue;
        }
        let g = group_index(graph, &groups, layer)?;
        let entry = ratio_of.entry(g).or_insert(0.0);
        *entry = entry.max(ratio);
    }
    let floor = |g: usize| settings.min_channels.min(groups[g].channels);
    let scores = |g: usize| channel_scores(graph, &groups[g], settings.importance, settings.taylor);
    let mut kept = BTreeMap::new();
    match settings.scope {
        Scope::Local => {
            for (&g, &ratio) in &ratio_of {
                let channels = groups[g].channels;
                let keep = (channels - removal_count(channels, ratio).min(channels)).max(floor(g));
                kept.insert(groups[g].name.clone(), keep_highest(&scores(g)?, keep));
            }
        }
        Scope::Global { ratio } => {
            let (candidates, budget): (Vec<usize>, usize) = match ratio {
                Some(ratio) => {
                    if !(0.0..1.0).contains(&ratio) {
                        return Err(CompressError::Plan(format!(
                            "the global prune ratio {ratio} is not in [0, 1)"
                        )));
                    }
                    if !ratio_of.is_empty() {
                        return Err(CompressError::Plan(
                            "a global prune ratio and per-layer prune ratios exclude each other"
                                .into(),
                        ));
                    }
                    let candidates: Vec<usize> = (0..groups.len())
                        .filter(|&g| groups[g].is_prunable())
                        .collect();
                    let total: usize = candidates.iter().map(|&g| groups[g].channels).sum();
                    (candidates, removal_count(total, ratio))
                }
                None => (
                    ratio_of.keys().copied().collect(),
                    ratio_of
                        .iter()
                        .map(|(&g, &r)| removal_count(groups[g].channels, r))
                        .sum(),
                ),
            };
            // (normalised score, position among candidates, channel)
            let mut pool: Vec<(f64, usize, usize)> = Vec::new();
            for (position, &g) in candidates.iter().enumerate() {
                let s = scores(g)?;
                let mean = s.iter().sum::<f64>() / s.len().max(1) as f64;
                // Dividing by the mean makes groups of different widths and weight scales
                // comparable; a group whose scores are all zero stays at zero.
                let scale = if mean > 0.0 { 1.0 / mean } else { 0.0 };
                pool.extend(s.iter().enumerate().map(|(c, v)| (v * scale, position, c)));
            }
            // Lowest first; among ties, later groups and higher channels go first, the
            // mirror of local ranking's "lower index stays".
            pool.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)));
            let mut remaining: Vec<usize> =
                candidates.iter().map(|&g| groups[g].channels).collect();
            let mut removed: Vec<Vec<bool>> = candidates
                .iter()
                .map(|&g| vec![false; groups[g].channels])
                .collect();
            let mut count = 0;
            for (_, position, channel) in pool {
                if count == budget {
                    break;
                }
                if remaining[position] > floor(candidates[position]) {
                    removed[position][channel] = true;
                    remaining[position] -= 1;
                    count += 1;
                }
            }
            for (position, &g) in candidates.iter().enumerate() {
                let keep: Vec<usize> = (0..groups[g].channels)
                    .filter(|&c| !removed[position][c])
                    .collect();
                kept.insert(groups[g].name.clone(), keep);
            }
        }
    }
    Ok(kept)
}

/// Returns a new graph in which each group named in `keep` (by its [`PruneGroup::name`])
/// keeps only the listed channels (ascending): every slice of the group is cut and the
/// ops' channel counts are updated. Everything else, including any per-parameter maps of
/// the spec, is carried over unchanged, since no parameter is renamed.
pub fn remove_channels(graph: &Graph, keep: &BTreeMap<String, Vec<usize>>) -> Result<Graph> {
    let groups = dependency_groups(graph)?;
    let mut spec = graph.spec.clone();
    let mut params = graph.params.clone();
    for (name, kept) in keep {
        let group = groups
            .iter()
            .find(|g| &g.name == name)
            .ok_or_else(|| layer_error(name, "does not head a channel group"))?;
        if let Some(reason) = &group.blocked {
            return Err(layer_error(name, format!("cannot be pruned: {reason}")));
        }
        let ascending = kept.windows(2).all(|w| w[0] < w[1]);
        if kept.is_empty() || !ascending || kept.iter().any(|&c| c >= group.channels) {
            return Err(layer_error(
                name,
                format!(
                    "the kept channels must be ascending, distinct, below {} and not empty",
                    group.channels
                ),
            ));
        }
        if kept.len() == group.channels {
            continue;
        }
        for slice in &group.slices {
            let e = slice.expansion;
            let indices: Vec<u32> = kept
                .iter()
                .flat_map(|&c| (c * e..(c + 1) * e).map(|i| i as u32))
                .collect();
            let tensor = params.get(&slice.param).ok_or_else(|| {
                layer_error(name, format!("parameter `{}` is missing", slice.param))
            })?;
            let index = Tensor::from_vec(indices, kept.len() * e, tensor.device())?;
            let cut = tensor.index_select(&index, slice.dim)?;
            params.insert(slice.param.clone(), cut);
        }
        let n = kept.len();
        for node in spec.nodes.iter_mut() {
            let member = group.members.contains(&node.name);
            let depthwise = group.depthwise.contains(&node.name);
            let batch_norm = group.batch_norms.contains(&node.name);
            let consumer = group.consumers.iter().find(|c| c.layer == node.name);
            // A layer may both produce and read the same channels (a residual block of one
            // convolution), so each role sets its own count.
            let output = (member || depthwise || batch_norm).then_some(n);
            let input = consumer.map(|c| n * c.expansion);
            node.op.resize_channels(input, output);
        }
    }
    // Re-check the whole graph: shapes must still chain.
    Ok(Graph::new(spec, params)?)
}

/// The structured-pruning pass: ranks channels on `graph`'s weights as `settings` say and
/// returns a new, smaller dense graph. `graph` is not changed.
pub fn prune_channels(graph: &Graph, settings: &PruneSettings) -> Result<Graph> {
    let kept = select_channels(graph, settings)?;
    remove_channels(graph, &kept)
}

/// The channels (or neurons) of `layer`'s group that survive pruning `ratio` of them,
/// ascending: L1 importance, local ranking, at least one kept.
pub fn select_neurons(graph: &Graph, layer: &str, ratio: f64) -> Result<Vec<usize>> {
    let settings = PruneSettings::local([(layer.to_string(), ratio)].into());
    let groups = dependency_groups(graph)?;
    let g = group_index(graph, &groups, layer)?;
    let mut kept = select_channels(graph, &settings)?;
    Ok(kept
        .remove(&groups[g].name)
        .unwrap_or_else(|| (0..groups[g].channels).collect()))
}

/// Returns a new graph with `ratios[layer]` of each named layer's channels (or neurons)
/// removed: L1 importance, local ranking, at least one channel kept per group. Every group
/// is ranked on the original weights, so the result does not depend on the order in
/// which groups are pruned.
pub fn prune(graph: &Graph, ratios: &BTreeMap<String, f64>) -> Result<Graph> {
    prune_channels(graph, &PruneSettings::local(ratios.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;
    use sculpt_nn::zoo;

    fn dev() -> candle_core::Device {
        sculpt_nn::device()
    }

    /// The dense network with the removed channels silenced: every slice that carries a
    /// channel's values is zeroed (weights, biases, batch-norm γ and β, depthwise
    /// filters), so that the channel is 0 wherever it flows. Batch-norm statistics stay:
    /// with γ = β = 0 the channel's output is 0 whatever they are.
    fn masked(graph: &Graph, kept: &BTreeMap<String, Vec<usize>>) -> Graph {
        let groups = dependency_groups(graph).unwrap();
        let mut out = graph.clone();
        for (name, keep) in kept {
            let group = groups.iter().find(|g| &g.name == name).unwrap();
            let mask: Vec<f32> = (0..group.channels)
                .map(|c| if keep.contains(&c) { 1.0 } else { 0.0 })
                .collect();
            for s in group.slices.iter().filter(|s| s.dim == 0) {
                if sculpt_nn::GraphSpec::is_buffer(&s.param) {
                    continue;
                }
                let t = &out.params[&s.param];
                let mut shape = vec![1; t.rank()];
                shape[0] = group.channels;
                let m = Tensor::from_vec(mask.clone(), shape, &dev()).unwrap();
                let zeroed = t.broadcast_mul(&m).unwrap();
                out.params.insert(s.param.clone(), zeroed);
            }
        }
        out
    }

    /// Prunes `graph`, checks that the result computes what the masked dense network
    /// computes, and that it differs from the unpruned one. Returns the pruned graph.
    fn check_equals_masked(graph: &Graph, settings: &PruneSettings) -> Graph {
        let kept = select_channels(graph, settings).unwrap();
        assert!(
            kept.values().any(|k| !k.is_empty()),
            "nothing selected: {kept:?}"
        );
        let pruned = prune_channels(graph, settings).unwrap();
        let reference = masked(graph, &kept);
        let mut dims = vec![4];
        dims.extend_from_slice(&graph.spec.input_shape);
        let x = Tensor::randn(0f32, 1.0, dims, &dev()).unwrap();
        let a = pruned.forward(&x).unwrap();
        let b = reference.forward(&x).unwrap();
        let diff = crate::testing::max_abs_diff(&a, &b);
        assert!(diff <= 1e-4, "{}: max difference {diff}", graph.spec.name);
        let c = graph.forward(&x).unwrap();
        assert!(
            crate::testing::max_abs_diff(&a, &c) > 1e-3,
            "{}: pruning did not change the function",
            graph.spec.name
        );
        assert!(pruned.num_params() < graph.num_params());
        pruned
    }

    fn ratios(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn group<'a>(groups: &'a [PruneGroup], name: &str) -> &'a PruneGroup {
        groups
            .iter()
            .find(|g| g.name == name)
            .unwrap_or_else(|| panic!("no group `{name}`"))
    }

    fn consumers(g: &PruneGroup) -> Vec<(&str, usize)> {
        g.consumers
            .iter()
            .map(|c| (c.layer.as_str(), c.expansion))
            .collect()
    }

    #[test]
    fn pruned_network_equals_masked_dense_network() {
        let graph = zoo::build("mlp", &[64], 10, 3).unwrap();
        let r = ratios(&[("fc1", 0.5), ("fc2", 0.3)]);
        let pruned = check_equals_masked(&graph, &PruneSettings::local(r.clone()));
        assert_eq!(pruned.param("fc1.weight").unwrap().dims(), &[128, 64]);
        assert_eq!(pruned.param("fc2.weight").unwrap().dims(), &[90, 128]);
        assert_eq!(pruned.param("fc3.weight").unwrap().dims(), &[10, 90]);
        assert!(pruned.num_params() < graph.num_params() / 2);
        // The thin wrapper does the same.
        let again = prune(&graph, &r).unwrap();
        assert_eq!(again.spec, pruned.spec);
    }

    #[test]
    fn lenet5_pruned_equals_masked_dense_network() {
        let graph = zoo::build("lenet-5", &[1, 20, 20], 10, 5).unwrap();
        let pruned = check_equals_masked(
            &graph,
            &PruneSettings::local(ratios(&[("conv1", 0.4), ("conv2", 0.5), ("fc1", 0.6)])),
        );
        assert_eq!(pruned.param("conv1.weight").unwrap().dims(), &[12, 1, 5, 5]);
        assert_eq!(
            pruned.param("conv2.weight").unwrap().dims(),
            &[25, 12, 5, 5]
        );
        assert_eq!(pruned.param("fc1.weight").unwrap().dims(), &[200, 100]);
        assert_eq!(pruned.param("fc2.weight").unwrap().dims(), &[10, 200]);
    }

    #[test]
    fn resnet8_pruned_equals_masked_dense_network() {
        let mut graph = zoo::build("resnet-8", &[1, 16, 16], 10, 7).unwrap();
        crate::testing::randomise_batch_norms(&mut graph, 11);
        // The projection shortcut is addressed, not its group's head, and the stem's
        // group gets two ratios: the larger applies.
        let settings = PruneSettings::local(ratios(&[
            ("conv1", 0.25),
            ("layer1.conv2", 0.5),
            ("layer1.conv1", 0.5),
            ("layer2.shortcut.0", 0.5),
            ("layer3.conv1", 0.3),
            ("layer3.conv2", 0.5),
        ]));
        let pruned = check_equals_masked(&graph, &settings);
        let dims = |p: &str| pruned.param(p).unwrap().dims().to_vec();
        assert_eq!(dims("conv1.weight"), [8, 1, 3, 3]);
        assert_eq!(dims("layer1.conv2.weight"), [8, 8, 3, 3]);
        assert_eq!(dims("layer1.bn2.running_var"), [8]);
        assert_eq!(dims("layer2.conv1.weight"), [32, 8, 3, 3]);
        assert_eq!(dims("layer2.conv2.weight"), [16, 32, 3, 3]);
        assert_eq!(dims("layer2.shortcut.0.weight"), [16, 8, 1, 1]);
        assert_eq!(dims("layer3.shortcut.0.weight"), [32, 16, 1, 1]);
        assert_eq!(dims("fc.weight"), [10, 32]);
    }

    #[test]
    fn mobilenet_pruned_equals_masked_dense_network() {
        let mut graph = zoo::build("mobilenet-s", &[1, 16, 16], 10, 11).unwrap();
        crate::testing::randomise_batch_norms(&mut graph, 11);
        let settings = PruneSettings::local(ratios(&[
            ("conv1", 0.5),
            ("block1.pw", 0.25),
            ("block3.pw", 0.5),
        ]));
        check_equals_masked(&graph, &settings);
        // Global ranking too, with BN γ: any kept set must match its mask.
        let settings = PruneSettings {
            importance: Importance::BnGamma,
            scope: Scope::Global { ratio: Some(0.4) },
            ..PruneSettings::default()
        };
        check_equals_masked(&graph, &settings);
    }

    #[test]
    fn resnet8_groups_tie_the_channels_of_residual_sums() {
        let graph = zoo::build("resnet-8", &[3, 16, 16], 10, 0).unwrap();
        let groups = dependency_groups(&graph).unwrap();
        // The first block has an identity shortcut: its sum ties the second convolution's
        // channels to the block's input, so to the stem convolution that produced it.
        let stem = group(&groups, "conv1");
        assert_eq!(stem.members, ["conv1", "layer1.conv2"]);
        assert_eq!(stem.channels, 16);
        assert_eq!(stem.batch_norms, ["bn1", "layer1.bn2"]);
        assert_eq!(
            consumers(stem),
            [
                ("layer1.conv1", 1),
                ("layer2.conv1", 1),
                ("layer2.shortcut.0", 1)
            ]
        );
        assert!(stem.is_prunable());
        // Projection shortcuts: the main path's last convolution and the shortcut
        // convolution meet in the sum.
        let block2 = group(&groups, "layer2.conv2");
        assert_eq!(block2.members, ["layer2.conv2", "layer2.shortcut.0"]);
        assert_eq!(block2.batch_norms, ["layer2.bn2", "layer2.shortcut.1"]);
        assert_eq!(
            consumers(block2),
            [("layer3.conv1", 1), ("layer3.shortcut.0", 1)]
        );
        let block3 = group(&groups, "layer3.conv2");
        assert_eq!(block3.members, ["layer3.conv2", "layer3.shortcut.0"]);
        assert_eq!(block3.channels, 64);
        // Global average pooling: one fc input feature per channel.
        assert_eq!(consumers(block3), [("fc", 1)]);
        assert!(block3.slices.contains(&ParamSlice {
            param: "fc.weight".into(),
            dim: 1,
            expansion: 1
        }));
        // Inside a block the first convolution has a group of its own.
        let inner = group(&groups, "layer2.conv1");
        assert_eq!(inner.members, ["layer2.conv1"]);
        assert_eq!(consumers(inner), [("layer2.conv2", 1)]);
        let fc = group(&groups, "fc");
        assert!(fc.blocked.as_deref().unwrap().contains("output"));
        assert_eq!(
            prunable_layers(&graph),
            [
                "conv1",
                "layer1.conv1",
                "layer2.conv1",
                "layer2.conv2",
                "layer3.conv1",
                "layer3.conv2"
            ]
        );
        // Every slice of the stem group: 2 member weights, 2 × 4 batch-norm tensors and 3
        // consumer weights; no biases (convolutions before batch norm have none).
        assert_eq!(stem.slices.len(), 2 + 8 + 3);
    }

    #[test]
    fn depthwise_convolutions_follow_their_input_channels() {
        let mut graph = zoo::build("mobilenet-s", &[3, 16, 16], 10, 2).unwrap();
        crate::testing::randomise_batch_norms(&mut graph, 11);
        let groups = dependency_groups(&graph).unwrap();
        let stem = group(&groups, "conv1");
        assert_eq!(stem.members, ["conv1"]);
        assert_eq!(stem.depthwise, ["block1.dw"]);
        assert_eq!(stem.batch_norms, ["bn1", "block1.dw_bn"]);
        assert_eq!(consumers(stem), [("block1.pw", 1)]);
        assert_eq!(
            prunable_layers(&graph),
            ["conv1", "block1.pw", "block2.pw", "block3.pw"]
        );
        let err = prune(&graph, &ratios(&[("block2.dw", 0.5)])).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("block2.dw") && text.contains("block1.pw"),
            "{text}"
        );

        let pruned = prune(&graph, &ratios(&[("conv1", 0.5), ("block1.pw", 0.25)])).unwrap();
        let node_op = |n: &str| pruned.spec.node(n).unwrap().op.clone();
        let out_channels = |n: &str| match node_op(n) {
            Op::Conv2d { out_channels, .. } => out_channels,
            _ => unreachable!(),
        };
        for (pw, dw) in [("conv1", "block1.dw"), ("block1.pw", "block2.dw")] {
            let c = out_channels(pw);
            assert_eq!(
                node_op(dw),
                Op::Conv2d {
                    in_channels: c,
                    out_channels: c,
                    kernel_size: 3,
                    stride: 2,
                    padding: 1,
                    groups: c,
                    bias: false
                },
                "{dw}"
            );
            assert_eq!(
                pruned.param(&format!("{dw}.weight")).unwrap().dims(),
                &[c, 1, 3, 3]
            );
        }
        assert_eq!(out_channels("conv1"), 8);
        assert_eq!(out_channels("block1.pw"), 24);
        assert_eq!(pruned.param("block2.dw_bn.weight").unwrap().dims(), &[24]);
        assert_eq!(
            pruned.param("block2.pw.weight").unwrap().dims(),
            &[64, 24, 1, 1]
        );
        // The kept depthwise filters are the ones of the kept channels.
        let kept = select_neurons(&graph, "conv1", 0.5).unwrap();
        let index = Tensor::from_vec(
            kept.iter().map(|&c| c as u32).collect::<Vec<_>>(),
            kept.len(),
            &dev(),
        )
        .unwrap();
        let expected = graph
            .param("block1.dw.weight")
            .unwrap()
            .index_select(&index, 0)
            .unwrap();
        assert_eq!(
            crate::testing::max_abs_diff(pruned.param("block1.dw.weight").unwrap(), &expected),
            0.0
        );
    }

    #[test]
    fn flatten_expands_each_channel_into_its_features() {
        // On 20x20 inputs conv2's 50 channels reach fc1 as 50 blocks of 2x2 features.
        let graph = zoo::build("lenet-5", &[1, 20, 20], 10, 1).unwrap();
        let groups = dependency_groups(&graph).unwrap();
        assert_eq!(consumers(group(&groups, "conv2")), [("fc1", 4)]);
        assert_eq!(consumers(group(&groups, "conv1")), [("conv2", 1)]);
        assert_eq!(consumers(group(&groups, "fc1")), [("fc2", 1)]);
        let kept = select_neurons(&graph, "conv2", 0.5).unwrap();
        assert_eq!(kept.len(), 25);
        let pruned = prune(&graph, &ratios(&[("conv2", 0.5)])).unwrap();
        let fc1 = pruned.param("fc1.weight").unwrap();
        assert_eq!(fc1.dims(), &[500, 100]);
        assert_eq!(
            pruned.spec.node("fc1").unwrap().op,
            Op::Linear {
                in_features: 100,
                out_features: 500,
                bias: true
            }
        );
        // Column block j of the pruned fc1 is column block kept[j] of the original.
        let original: Vec<Vec<f32>> = graph.param("fc1.weight").unwrap().to_vec2().unwrap();
        let cut: Vec<Vec<f32>> = fc1.to_vec2().unwrap();
        for (row_cut, row) in cut.iter().zip(&original) {
            for (j, &c) in kept.iter().enumerate() {
                assert_eq!(row_cut[4 * j..4 * j + 4], row[4 * c..4 * c + 4]);
            }
        }
    }

    #[test]
    fn half_pruning_of_conv_networks_runs_and_shrinks_them() {
        for name in ["resnet-8", "mobilenet-s"] {
            let graph = zoo::build(name, &[3, 16, 16], 10, 4).unwrap();
            let layers = prunable_layers(&graph);
            let settings = PruneSettings::local(layers.iter().map(|l| (l.clone(), 0.5)).collect());
            let pruned = prune_channels(&graph, &settings).unwrap();
            let x = Tensor::randn(0f32, 1.0, (2, 3, 16, 16), &dev()).unwrap();
            assert_eq!(pruned.forward(&x).unwrap().dims(), &[2, 10], "{name}");
            // Every group halves, so the weights (mostly products of two widths) fall to
            // well under half.
            assert!(
                pruned.num_params() * 2 < graph.num_params(),
                "{name}: {} of {}",
                pruned.num_params(),
                graph.num_params()
            );
            assert!(pruned.flops().unwrap() * 2 < graph.flops().unwrap());
            for g in dependency_groups(&pruned).unwrap() {
                let before = group(&dependency_groups(&graph).unwrap(), &g.name).channels;
                if g.is_prunable() {
                    assert_eq!(g.channels, before / 2, "{name} {}", g.name);
                }
            }
            // The input graph is untouched.
            assert_eq!(graph.spec, zoo::spec(name, &[3, 16, 16], 10).unwrap());
        }
    }

    #[test]
    fn maps_keyed_by_parameter_name_are_carried_through() {
        let mut graph = zoo::build("lenet-5", &[1, 16, 16], 10, 1).unwrap();
        graph.spec.weight_quant.insert(
            "conv2.weight".into(),
            sculpt_nn::WeightQuant::symmetric_per_channel(4),
        );
        graph.spec.sparse.insert("fc1.weight".into());
        let pruned = prune(&graph, &ratios(&[("conv2", 0.5)])).unwrap();
        assert_eq!(pruned.spec.weight_quant, graph.spec.weight_quant);
        assert_eq!(pruned.spec.sparse, graph.spec.sparse);
        assert_eq!(pruned.spec.name, graph.spec.name);
    }

    #[test]
    fn keeps_the_largest_rows() {
        let spec = zoo::mlp_spec("t", &[2], &[4], 2);
        let mut graph = zoo::init(spec, 0).unwrap();
        let w = Tensor::new(&[[1f32, 1.], [0.1, 0.], [-3., 0.], [0., 0.5]], &dev()).unwrap();
        graph.params.insert("fc1.weight".into(), w);
        assert_eq!(select_neurons(&graph, "fc1", 0.5).unwrap(), vec![0, 2]);
        assert_eq!(select_neurons(&graph, "fc1", 0.99).unwrap(), vec![2]);
    }

    #[test]
    fn importance_criteria_rank_as_they_should() {
        let spec = zoo::mlp_spec("t", &[2], &[3], 2);
        let mut graph = zoo::init(spec, 0).unwrap();
        // Row 0 is one large weight, row 1 two middling ones: L1 prefers row 1 (4 > 3),
        // L2 row 0 (3 > 2.83).
        let w = Tensor::new(&[[3f32, 0.], [2., -2.], [1., 0.]], &dev()).unwrap();
        graph.params.insert("fc1.weight".into(), w);
        let keep_one = |graph: &Graph, importance| {
            let settings = PruneSettings {
                ratios: ratios(&[("fc1", 0.67)]),
                importance,
                ..PruneSettings::default()
            };
            select_channels(graph, &settings).unwrap()["fc1"].clone()
        };
        assert_eq!(keep_one(&graph, Importance::L1), [1]);
        assert_eq!(keep_one(&graph, Importance::L2), [0]);
        // Without a batch norm, BN γ falls back to L1.
        assert_eq!(keep_one(&graph, Importance::BnGamma), [1]);
        let groups = dependency_groups(&graph).unwrap();
        let fc1 = group(&groups, "fc1");
        assert_eq!(
            channel_scores(&graph, fc1, Importance::L1, None).unwrap(),
            [3.0, 4.0, 1.0]
        );
        // Equal scores: the lower index stays.
        let w = Tensor::new(&[[1f32, 0.], [0., 1.], [0., -1.]], &dev()).unwrap();
        graph.params.insert("fc1.weight".into(), w);
        assert_eq!(keep_one(&graph, Importance::L1), [0]);

        // BN γ ranks the channels of layer2.conv1 by |γ| of layer2.bn1, whatever the
        // weights say; a large negative γ counts as large.
        let mut graph = zoo::build("resnet-8", &[1, 16, 16], 10, 0).unwrap();
        let gamma: Vec<f32> = (0..32)
            .map(|c| match c {
                5 => -4.0,
                9 => 3.0,
                20 => 2.0,
                _ => 0.1 + c as f32 * 0.001,
            })
            .collect();
        graph.params.insert(
            "layer2.bn1.weight".into(),
            Tensor::from_vec(gamma, 32, &dev()).unwrap(),
        );
        let settings = PruneSettings {
            ratios: ratios(&[("layer2.conv1", 0.95)]),
            importance: Importance::BnGamma,
            min_channels: 3,
            ..PruneSettings::default()
        };
        assert_eq!(
            select_channels(&graph, &settings).unwrap()["layer2.conv1"],
            [5, 9, 20]
        );
        let l1 = PruneSettings {
            importance: Importance::L1,
            ..settings.clone()
        };
        assert_ne!(
            select_channels(&graph, &l1).unwrap()["layer2.conv1"],
            [5, 9, 20]
        );
        // In a residual group, γ is summed over the batch norms of the members.
        let groups = dependency_groups(&graph).unwrap();
        let block = group(&groups, "layer2.conv2");
        let scores = channel_scores(&graph, block, Importance::BnGamma, None).unwrap();
        assert_eq!(scores, vec![2.0; 32]);
    }

    #[test]
    fn global_scope_ranks_across_groups_and_keeps_the_minimum() {
        let mut graph = zoo::build("mlp", &[64], 10, 9).unwrap();
        // fc1 holds 5 strong neurons among 251 faint ones; fc2's neurons are all alike.
        let w = graph.param("fc1.weight").unwrap();
        let scale: Vec<f32> = (0..256)
            .map(|i| if i % 50 == 7 { 1.0 } else { 1e-3 })
            .collect();
        let scale = Tensor::from_vec(scale, (256, 1), &dev()).unwrap();
        let w = w.broadcast_mul(&scale).unwrap();
        graph.params.insert("fc1.weight".into(), w);
        let strong: Vec<usize> = (0..256).filter(|i| i % 50 == 7).collect();

        // 192 of 384 channels go, all from fc1's faint neurons.
        let settings = PruneSettings {
            scope: Scope::Global { ratio: Some(0.5) },
            ..PruneSettings::default()
        };
        let kept = select_channels(&graph, &settings).unwrap();
        assert_eq!(kept["fc1"].len(), 64);
        assert_eq!(kept["fc2"].len(), 128);
        assert!(strong.iter().all(|s| kept["fc1"].contains(s)));
        let pruned = prune_channels(&graph, &settings).unwrap();
        assert_eq!(pruned.param("fc1.weight").unwrap().dims(), &[64, 64]);

        // With a floor of 80 channels fc1 gives only 176; fc2 gives the other 16.
        let floor = PruneSettings {
            min_channels: 80,
            ..settings.clone()
        };
        let kept = select_channels(&graph, &floor).unwrap();
        assert_eq!(kept["fc1"].len(), 80);
        assert_eq!(kept["fc2"].len(), 112);
        assert!(strong.iter().all(|s| kept["fc1"].contains(s)));

        // Per-layer ratios set the budget: local pruning would remove 128 + 32.
        let budgeted = PruneSettings {
            ratios: ratios(&[("fc1", 0.5), ("fc2", 0.25)]),
            scope: Scope::Global { ratio: None },
            ..PruneSettings::default()
        };
        let kept = select_channels(&graph, &budgeted).unwrap();
        assert_eq!(kept["fc1"].len() + kept["fc2"].len(), 384 - 160);
        assert_eq!(kept["fc1"].len(), 96);
        // Local scope with a floor: fc1 would keep 26, the floor keeps 40.
        let local = PruneSettings {
            ratios: ratios(&[("fc1", 0.9)]),
            min_channels: 40,
            ..PruneSettings::default()
        };
        assert_eq!(select_channels(&graph, &local).unwrap()["fc1"].len(), 40);
        // A global ratio with per-layer ratios is ambiguous.
        let both = PruneSettings {
            ratios: ratios(&[("fc1", 0.5)]),
            ..settings
        };
        assert!(select_channels(&graph, &both).is_err());
    }

    fn toy_data(samples: usize, features: usize, classes: u32, seed: u64) -> Dataset {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let x: Vec<f32> = (0..samples * features)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let y: Vec<u32> = (0..samples).map(|_| rng.random_range(0..classes)).collect();
        Dataset {
            x: Tensor::from_vec(x, (samples, features), &dev()).unwrap(),
            y: Tensor::from_vec(y, samples, &dev()).unwrap(),
            num_classes: classes as usize,
        }
    }

    #[test]
    fn taylor_scores_are_gradient_times_weight() {
        let spec = zoo::mlp_spec("t", &[6], &[5], 3);
        let mut graph = zoo::init(spec, 1).unwrap();
        let data = toy_data(40, 6, 3, 2);
        let scores = taylor_scores(&graph, &data, 3, 8).unwrap();
        let names: Vec<&String> = scores.keys().collect();
        assert_eq!(names, ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]);
        // Central differences of the cross-entropy summed over the 24 samples used.
        let x = data.x.narrow(0, 0, 24).unwrap();
        let y = data.y.narrow(0, 0, 24).unwrap();
        let loss = |g: &Graph| -> f64 {
            let logits = g.forward(&x).unwrap();
            let mean = candle_nn::loss::cross_entropy(&logits, &y).unwrap();
            mean.to_scalar::<f32>().unwrap() as f64 * 24.0
        };
        let w: Vec<Vec<f32>> = graph.param("fc1.weight").unwrap().to_vec2().unwrap();
        let s: Vec<Vec<f32>> = scores["fc1.weight"].to_vec2().unwrap();
        // Small enough that no ReLU changes side, large enough for f32 round-off.
        let h = 3e-3f32;
        for (r, c) in [(0, 0), (2, 3), (4, 5)] {
            let mut shifted = |delta: f32| {
                let mut v = w.clone();
                v[r][c] += delta;
                graph
                    .params
                    .insert("fc1.weight".into(), Tensor::new(v, &dev()).unwrap());
                loss(&graph)
            };
            let gradient = (shifted(h) - shifted(-h)) / (2.0 * h as f64);
            let expected = (gradient * w[r][c] as f64).abs();
            let got = s[r][c] as f64;
            assert!(
                (got - expected).abs() <= 0.02 * expected + 2e-4,
                "({r}, {c}): {got} against {expected}"
            );
        }
    }

    #[test]
    fn taylor_importance_drops_neurons_the_loss_does_not_see() {
        let spec = zoo::mlp_spec("t", &[6], &[5], 3);
        let mut graph = zoo::init(spec, 1).unwrap();
        // Neuron 0 has the largest weights, but fc2 ignores it: it changes nothing.
        let w: Vec<Vec<f32>> = graph.param("fc1.weight").unwrap().to_vec2().unwrap();
        let mut w = w;
        w[0] = vec![2.0; 6];
        graph
            .params
            .insert("fc1.weight".into(), Tensor::new(w, &dev()).unwrap());
        let mut v: Vec<Vec<f32>> = graph.param("fc2.weight").unwrap().to_vec2().unwrap();
        for row in v.iter_mut() {
            row[0] = 0.0;
        }
        graph
            .params
            .insert("fc2.weight".into(), Tensor::new(v, &dev()).unwrap());
        let data = toy_data(32, 6, 3, 5);
        let taylor = taylor_scores(&graph, &data, 2, 16).unwrap();
        let l1 = PruneSettings::local(ratios(&[("fc1", 0.2)]));
        assert!(select_channels(&graph, &l1).unwrap()["fc1"].contains(&0));
        let by_taylor = PruneSettings {
            importance: Importance::Taylor,
            taylor: Some(&taylor),
            ..l1.clone()
        };
        assert_eq!(
            select_channels(&graph, &by_taylor).unwrap()["fc1"],
            [1, 2, 3, 4]
        );
        // Taylor without scores is an error, not a silent fallback.
        let missing = PruneSettings {
            importance: Importance::Taylor,
            ..l1
        };
        assert!(prune_channels(&graph, &missing).is_err());
    }

    #[test]
    fn taylor_pruning_runs_through_convolutions_and_batch_norms() {
        let graph = zoo::build("resnet-8", &[1, 16, 16], 4, 3).unwrap();
        let x = Tensor::randn(0f32, 1.0, (12, 1, 16, 16), &dev()).unwrap();
        let y =
            Tensor::from_vec((0..12u32).map(|i| i % 4).collect::<Vec<_>>(), 12, &dev()).unwrap();
        let data = Dataset {
            x,
            y,
            num_classes: 4,
        };
        let taylor = taylor_scores(&graph, &data, 2, 6).unwrap();
        let conv = &taylor["layer2.conv1.weight"];
        assert_eq!(conv.dims(), &[32, 16, 3, 3]);
        assert!(conv.sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
        assert!(!taylor.contains_key("bn1.running_mean"));
        let settings = PruneSettings {
            importance: Importance::Taylor,
            scope: Scope::Global { ratio: Some(0.5) },
            taylor: Some(&taylor),
            ..PruneSettings::default()
        };
        let pruned = prune_channels(&graph, &settings).unwrap();
        let out = pruned.forward(&data.x).unwrap();
        assert_eq!(out.dims(), &[12, 4]);
        assert_eq!(out.dtype(), DType::F32);
        assert!(pruned.num_params() < graph.num_params());
    }

    #[test]
    fn bad_requests_are_errors_that_name_the_layer() {
        let graph = zoo::build("mlp", &[64], 10, 3).unwrap();
        assert_eq!(prunable_layers(&graph), vec!["fc1", "fc2"]);
        let message = |r: &[(&str, f64)]| prune(&graph, &ratios(r)).unwrap_err().to_string();
        let output = message(&[("fc3", 0.5)]);
        assert!(
            output.contains("fc3") && output.contains("output"),
            "{output}"
        );
        let unknown = message(&[("fc9", 0.5)]);
        assert!(
            unknown.contains("fc9") && unknown.contains("no such layer"),
            "{unknown}"
        );
        assert!(message(&[("fc9", 0.0)]).contains("fc9"));
        let relu = message(&[("relu1", 0.5)]);
        assert!(relu.contains("relu1") && relu.contains("ReLU"), "{relu}");
        for bad in [1.0, -0.1, f64::NAN] {
            let text = message(&[("fc1", bad)]);
            assert!(text.contains("fc1") && text.contains("[0, 1)"), "{text}");
        }
        // A zero ratio on the output layer asks nothing and is fine.
        let same = prune(&graph, &ratios(&[("fc3", 0.0)])).unwrap();
        assert_eq!(same.num_params(), graph.num_params());
        let zero_floor = PruneSettings {
            ratios: ratios(&[("fc1", 0.5)]),
            min_channels: 0,
            ..PruneSettings::default()
        };
        assert!(prune_channels(&graph, &zero_floor).is_err());
        // The first convolution of a network reads the input but its outputs are free;
        // the group of the logits is not.
        let resnet = zoo::build("resnet-8", &[1, 16, 16], 10, 0).unwrap();
        let text = prune(&resnet, &ratios(&[("fc", 0.5)]))
            .unwrap_err()
            .to_string();
        assert!(text.contains("`fc`") && text.contains("output"), "{text}");
        let text = prune(&resnet, &ratios(&[("layer1.bn1", 0.5)]))
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("layer1.bn1") && text.contains("BatchNorm2d"),
            "{text}"
        );
    }

    #[test]
    fn a_group_tied_to_the_input_is_not_prunable() {
        // An identity shortcut straight from the input ties the stem's channels to the
        // image's, which cannot change.
        let mut graph = zoo::build("resnet-8", &[16, 16, 16], 10, 0).unwrap();
        for node in graph.spec.nodes.iter_mut() {
            if node.name == "layer1.add" {
                node.inputs[1] = INPUT.to_string();
            }
        }
        let groups = dependency_groups(&graph).unwrap();
        let block = group(&groups, "layer1.conv2");
        assert!(
            block.blocked.as_deref().unwrap().contains("input"),
            "{block:?}"
        );
        // The stem no longer meets the sum and stands alone.
        assert_eq!(group(&groups, "conv1").members, ["conv1"]);
        assert!(!prunable_layers(&graph).contains(&"layer1.conv2".to_string()));
    }
}
