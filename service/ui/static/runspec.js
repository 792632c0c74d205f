// What a round run was asked for, as its record (GET /v1/rounds/{run}: spec) has it, as [label, text]
// pairs for the round page: the strategy and every option the run was given (each strategy reads its
// own: docs/strategies.md), the server optimizer, the client selection and where accuracy is measured.
// The partition is the devices' (their assignment): the run records the first selected device's.
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
    ];
  }
  return { facts };
})();
