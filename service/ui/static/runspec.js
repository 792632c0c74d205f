// What a round run was asked for, as its record (GET /v1/rounds/{run}: spec) has it, as [label, text]
// pairs for the round page: the strategy and every option the run was given (each strategy reads its
// own: docs/strategies.md), the server optimizer, the client selection and where accuracy is measured.
// The partition is the devices' (their assignment): the run records the first selected device's.
// Privacy and secure aggregation are shown as given; epsilon per round is on the round page's chart.
"use strict";

window.FleetRunSpec = (function () {
  const shown = (v) => (v === null || v === undefined ? "default" : String(v));
  const pairs = (o) => Object.entries(o || {}).map(([k, v]) => `${k} ${shown(v)}`).join(", ") || "none";
  function facts(spec, num) {
    const { kind, ...server } = spec.server || {};
    const selection = spec.selection || "available";
    const evaluation = spec.evaluation;
    return [
      ["Strategy", spec.aggregation],
      ["Options", pairs(spec.options)],
      ["Server optimizer", spec.server ? `${kind}: ${pairs(server)}` : "none (nothing aggregated)"],
      ["Selection", Object.keys(spec.selection_options || {}).length ? `${selection} (${pairs(spec.selection_options)})` : selection],
      ["Evaluated on", evaluation ? `${evaluation.dataset} ${evaluation.split}${evaluation.limit ? `, first ${num(evaluation.limit)}` : ""}` : "—"],
      ["Partition", spec.partition
        ? `${spec.partition.scheme} (${pairs(spec.partition.parameters)}), seed ${shown(spec.partition.seed)}, ${spec.partition.dataset}`
        : "not recorded (the first device had no data assigned, or is on another shard): each participant's page shows its data's scheme"],
      ["Privacy", privacy(spec.privacy)],
      ["Secure aggregation", secure(spec.secure_aggregation)],
    ];
  }
  // Differential privacy as the run was given it (docs/privacy.md); "none" without it.
  function privacy(p) {
    if (!p) return "none";
    const clip = p.adaptive ? `clip ${p.clip} adapting to quantile ${p.target_quantile}` : `clip ${p.clip}`;
    const budget = p.target_epsilon ? `, budget epsilon ${p.target_epsilon} (${p.on_budget})` : "";
    return `${p.mode} DP: noise multiplier ${p.noise_multiplier}, ${clip}, delta ${p.delta}, ${p.accountant} accountant${budget}`;
  }
  function secure(s) {
    if (!s) return "none";
    const graph = s.neighbors ? `SecAgg+ over ${s.neighbors} neighbours` : "SecAgg (every pair)";
    const fewest = s.min_inputs ? `, at least ${s.min_inputs} inputs a round` : "";
    return `${graph}, threshold ${s.threshold}${fewest}, values clipped to ±${s.clipping_range} in ${s.quantization_range} levels`;
  }
  return { facts };
})();
