"""What a run of rounds is asked to do: its devices, rounds, training, aggregation, deadline and
evaluation (``RoundSpec``), and the limits it is checked against."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from service.errors import InvalidPrivacy, InvalidRequest
from service.federated.local import LocalTraining
from service.federated.participants import DeviceWeights, Evaluation
from service.federated.selectors import DEFAULT as DEFAULT_SELECTION
from service.federated.selectors import make as make_selector
from service.federated.selectors.base import Selector, SelectorSettings
from service.federated.strategies import NAMES, make, server_defaults
from service.federated.strategies.base import ServerOptimizer, Strategy, StrategySettings
from service.privacy.accounting import Ledger, Sampling, affordable_rounds
from service.privacy.secagg import SecAggSettings
from service.privacy.settings import DPSettings

AGGREGATIONS: tuple[str, ...] = (*NAMES, "none")
"""The strategies, and "none": local training only, nothing aggregated."""
Stragglers = Literal["drop", "stale"]
STRAGGLERS: tuple[str, ...] = ("drop", "stale")
MIN_DEADLINE, MAX_DEADLINE = 0.001, 1e9
"""The simulated seconds a round's deadline may be."""
MAX_START_TIME = 1e12
"""The latest simulated time a run may start at (about 31,700 years)."""
MAX_ROUNDS = 1000
SAMPLED: tuple[str, ...] = ("poisson", "uniform")
"""The selections a differential-privacy accountant can account: Poisson, and fixed-size uniform."""


@dataclass(frozen=True)
class RoundSpec:
    model: str
    devices: tuple[str, ...]
    """The devices the run picks from (resolved when the run is asked for)."""
    rounds: int = 1
    participants: int | None = None
    """Devices per round (None: all of them)."""
    training: LocalTraining = field(default_factory=LocalTraining)
    aggregation: str = "fedavg"
    """The strategy (``service.federated.strategies``), or "none"."""
    server: ServerOptimizer | None = None
    """The server's optimizer; None: the strategy's defaults."""
    options: StrategySettings = field(default_factory=StrategySettings)
    """The strategy's own settings (FedProx's mu, ...)."""
    seed: int = 0
    start_version: int | None = None
    """The global version the first round starts from (None: the model's latest)."""
    evaluation: Evaluation | None = None
    local_accuracy: bool = True
    """Evaluate each participant on its local test data after it trains."""
    device_weights: DeviceWeights = "trained"
    """After a participant sends its update: keep the trained weights (unsaved, like any training),
    drop them (the device's next call starts from its checkpoint), or save them as its checkpoint."""
    owner: str = ""
    """The device prefix of the key that started the run ("" for an admin): only that key's holders
    (and admins) see the run or cancel it."""
    deadline: float | None = None
    """Simulated seconds a round waits for its participants (None: for all of them)."""
    stragglers: Stragglers = "drop"
    """What becomes of the update of a participant past the deadline: dropped, or added late (stale)."""
    start_time: float = 0.0
    """The simulated time the run's first round starts at (availability is read at it)."""
    selection: str = DEFAULT_SELECTION
    """Who takes part in each round (``service.federated.selectors``): available, uniform or oort."""
    selection_options: SelectorSettings = field(default_factory=SelectorSettings)
    """The selector's own settings (Oort's epsilon, alpha, preferred duration, ...)."""
    partition: Mapping[str, object] | None = None
    """How the devices' data were split, as the first selected device's assignment says (dataset,
    scheme, parameters, seed): what the run's view and the dashboard show of it; None when unknown."""
    privacy: DPSettings | None = None
    """Differential privacy (``service.privacy.settings``): central, local or distributed; None: none."""
    secure_aggregation: SecAggSettings | None = None
    """Secure aggregation (SecAgg+; ``service.privacy.secagg``): the server sees only the sum."""

    def check(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise InvalidRequest(
                f"unknown aggregation {self.aggregation!r}; choose one of {', '.join(AGGREGATIONS)}"
            )
        if not 1 <= self.rounds <= MAX_ROUNDS:
            raise InvalidRequest(f"rounds must be between 1 and {MAX_ROUNDS} (got {self.rounds})")
        if not self.devices:
            raise InvalidRequest("the run selects no devices: give IDs, a prefix that matches some, or all")
        if self.participants is not None and not 1 <= self.participants <= len(self.devices):
            raise InvalidRequest(
                f"participants must be between 1 and the {len(self.devices)} devices selected "
                f"(got {self.participants})"
            )
        if self.deadline is not None and not (
            isinstance(self.deadline, int | float) and MIN_DEADLINE <= self.deadline <= MAX_DEADLINE
        ):
            raise InvalidRequest(
                f"deadline must be between {MIN_DEADLINE:g} and {MAX_DEADLINE:g} simulated seconds "
                f"(got {self.deadline})"
            )
        if self.stragglers not in STRAGGLERS:
            raise InvalidRequest(
                f"unknown stragglers policy {self.stragglers!r}; choose one of {', '.join(STRAGGLERS)}"
            )
        if not (isinstance(self.start_time, int | float) and 0 <= self.start_time <= MAX_START_TIME):
            raise InvalidRequest(
                f"start_time must be between 0 and {MAX_START_TIME:g} simulated seconds "
                f"(got {self.start_time})"
            )
        self.training.check()
        if self.strategy().asynchronous and self.aggregation != "none":
            self._check_asynchronous()
        self.selector()
        if self.privacy is not None or self.secure_aggregation is not None:
            try:
                self._check_private()
            except InvalidPrivacy:
                raise
            except InvalidRequest as exc:  # every privacy refusal is one kind (422), naming the setting
                raise InvalidPrivacy(exc.message) from exc

    def sampling(self) -> Sampling:
        """How participants are drawn, as a privacy accountant sees it (``poisson``, else fixed-size)."""
        population = len(self.devices)
        cohort = self.participants or population
        return Sampling("poisson" if self.selection == "poisson" else "fixed", population, cohort)

    def _check_private(self) -> None:
        """Privacy needs a strategy whose aggregate is the mean, updates on time, a sampling the
        accountant knows, and a budget the run fits in (``on_budget="refuse"``)."""
        if self.aggregation == "none" or not self.strategy().private:
            allowed = ", ".join(name for name in AGGREGATIONS if name != "none" and make(name).private)
            raise InvalidRequest(
                f"aggregation {self.aggregation!r} cannot run with differential privacy or secure "
                f"aggregation (its aggregate is not the plain mean of the updates); choose one of {allowed}"
            )
        if self.stragglers == "stale":
            raise InvalidRequest("stragglers 'stale' cannot be added to a private or secure sum: use 'drop'")
        cohort = self.participants or len(self.devices)
        if self.secure_aggregation is not None:
            self.secure_aggregation.check(cohort)
        dp = self.privacy
        if dp is None:
            return
        dp.check()
        if self.selection not in SAMPLED:
            raise InvalidRequest(
                "with differential privacy, participants are sampled as the accountant assumes: selection "
                "must be 'poisson' (Poisson sampling) or 'uniform' (a fixed-size sample without replacement)"
            )
        if dp.mode == "distributed" and self.secure_aggregation is None:
            raise InvalidRequest(
                "privacy.mode 'distributed' has each device add its share of the noise under secure "
                "aggregation: give secure_aggregation too"
            )
        if dp.adaptive and dp.mode == "local":
            raise InvalidRequest(
                "privacy.adaptive needs the count of clipped updates noised in a sum: central or "
                "distributed mode, not local"
            )
        dp.update_noise_multiplier(cohort)
        Ledger(dp, self.sampling())  # refuses an accountant that cannot account this sampling
        self._check_budget(dp)

    def _check_budget(self, dp: DPSettings) -> None:
        if dp.target_epsilon is None:
            return
        if dp.noise_multiplier == 0:
            raise InvalidRequest("privacy.target_epsilon needs noise: noise_multiplier 0 gives no privacy")
        if dp.on_budget != "refuse":
            return
        ledger = Ledger(dp, self.sampling())
        epsilon = ledger.after(self.rounds, dp.noise_multiplier)
        if epsilon > dp.target_epsilon:
            fits = affordable_rounds(ledger, dp.target_epsilon, self.rounds, dp.noise_multiplier)
            raise InvalidRequest(
                f"privacy.target_epsilon {dp.target_epsilon:g} would be exceeded: {self.rounds} rounds "
                f"reach epsilon {epsilon:.4g} at delta {dp.delta:g}; {fits} rounds fit (or give "
                "on_budget 'stop', or more noise)"
            )

    def _check_asynchronous(self) -> None:
        """An asynchronous strategy (FedBuff) has no rounds to wait for nor to pick participants for."""
        if self.deadline is not None:
            raise InvalidRequest(f"{self.aggregation} has no rounds to wait for: give no deadline")
        if self.selection != DEFAULT_SELECTION:
            raise InvalidRequest(
                f"{self.aggregation} picks devices uniformly among those online as slots free: "
                f"selection {self.selection!r} does not apply"
            )

    def optimizer(self) -> ServerOptimizer:
        if self.server is not None:
            return self.server
        return server_defaults("fedavg" if self.aggregation == "none" else self.aggregation)

    def strategy(self) -> Strategy:
        """The run's strategy, checked (FedAvg's for "none": its local training, nothing combined)."""
        name = "fedavg" if self.aggregation == "none" else self.aggregation
        return make(name, self.optimizer(), self.options)

    def selector(self) -> Selector:
        """A new selector for the run (it keeps what it learns of the run's rounds), checked."""
        return make_selector(self.selection, self.selection_options, self.seed)

    def view(self) -> dict[str, object]:
        """What the API shows: the devices counted (``asdict`` would copy a million IDs one by one)."""
        view = asdict(replace(self, devices=()))
        view["devices"] = len(self.devices)
        strategy, selector = self.strategy(), self.selector()
        view["options"] = {k: v for k, v in asdict(self.options).items() if k in strategy.reads}
        view["selection_options"] = {
            k: v for k, v in asdict(self.selection_options).items() if k in selector.reads
        }
        server = {k: v for k, v in asdict(self.optimizer()).items() if k in ("kind", *strategy.server_reads)}
        view["server"] = server if self.aggregation != "none" else None
        return view
