"""The one stage plan: every run of the recipe and of the study, and the step that makes it.

The demo recipe (``python -m tfblend.recipe``) is this plan at size small with one seed; the
study (``python -m tfblend.study``) is the plan at size medium with seeds. Both take their
training budget and WER subsets from :data:`SIZES` and their directory names from
:class:`StagePlan`.

Every method of :class:`StagePlan` that makes something runs one stage through
:class:`tfblend.study.stages.StageRunner` (skipped when complete, resumed when partial) and
returns the directory or file it made. Names encode what a run depends on (preset, chunking, k,
alpha, T, seed), so a changed choice trains a new run instead of reusing a different one, and
every training directory also refuses a rerun with other settings (``tfblend.train.rundir``).

Layout under a work dir:
  corpus/                          the corpus (make_corpus)
  report/                          stages.json (stage wall times); the recipe's results.md,
                                   results.json and training_curves.png; the study's study.json
  teacher-seed{S}/                 BLSTM teachers
  cnn-{student}-seed{S}/           CNN baselines; {student} is the preset, ``-c{L}`` when dense;
                                   ``cnn-{student}-e{N}-seed{S}`` trained for N epochs instead
                                   of the students' budget (the learning-curve diagnosis)
  dnn-seed{S}/                     DNN baselines
  smooth-{student}-eps{E}-seed{S}/ label-smoothing controls
  targets_{kind}-{teacher}/        stored teacher targets (top-k, derived top-k, sampled, mixture)
  blend_{student}_{kind}_a{A}_T{T}-seed{S}/   blended CNNs (``..._T{T}-e{N}-seed{S}`` as above)
  scores/{run}.json                per-utterance test frame counts (score_utterances);
                                   ``{teacher}-w{W}.json`` scored on windows of +-W frames
  graph/                           the decoding graph of the corpus's task LM
  exports/{run}/1/                 the SavedModels decoded (export)
  wer/{run}/                       their WER (decode; the recipe decodes every model in one
                                   stage, ``wer/{model name}/``)
"""

import dataclasses
import os

from tfblend.errors import DataError
from tfblend.evaluation.report import read_history
from tfblend.records import read_manifest
from tfblend.study.stages import (
    StageRunner,
    export_current,
    export_metadata,
    model_done,
    newest_change,
    remove_stale_export,
    set_done,
)
from tfblend.targets.sparsify import resolve_k
from tfblend.train.modeldir import read_model_info


@dataclasses.dataclass(frozen=True)
class Size:
    """What one corpus size trains and decodes.

    Attributes:
      teacher_epochs: the teacher's training epochs.
      student_epochs: every student's (all students get the same budget on the same data).
      wer_test, wer_dev: the WER subsets, the first N utterances of every test (dev) voice
        (None: all); the acoustic scale is chosen on dev.
    """

    teacher_epochs: int
    student_epochs: int
    wer_test: int | None
    wer_dev: int


#: The one table of sizes, for the recipe and the study. Small is the demo's and the study's that
#: 2 CPU cores finish in about 3 hours: the teacher and every student 8 epochs (the GPU
#: replication's passes, docs/reference-facts.md section 5; on the small corpus the deep student's
#: dev accuracy gained 0.2-0.6 points in its last epoch, 3 seeds, the teacher's 0.0-0.4, 2 seeds),
#: 12 test and 6 dev utterances per voice decoded (the dev ones at each of 4 acoustic scales),
#: which keep the demo's wer stage near 5 minutes. The medium budget is the converged medium
#: study's: the teacher and every student 8 epochs, as on the small corpus (on an idle 2-core
#: machine a medium teacher epoch took 161-186 s and a deep-student epoch 306-321 s, so the
#: study's 10 deep-student runs, 2 teachers, dumps, scoring and decoding are estimated at about
#: 10 hours), every test utterance decoded.
SIZES = {
    "tiny": Size(teacher_epochs=1, student_epochs=1, wer_test=3, wer_dev=3),
    "small": Size(teacher_epochs=8, student_epochs=8, wer_test=12, wer_dev=6),
    "medium": Size(teacher_epochs=8, student_epochs=8, wer_test=None, wer_dev=10),
    "large": Size(teacher_epochs=4, student_epochs=2, wer_test=40, wer_dev=10),
}


@dataclasses.dataclass(frozen=True)
class StudentSpec:
    """A CNN student: a VGG preset trained on windows (``chunk_frames`` 0) or densely on chunks."""

    preset: str
    chunk_frames: int

    @classmethod
    def parse(cls, spec: str) -> "StudentSpec":
        """From ``PRESET[:CHUNK_FRAMES]`` (``--students``; 0 or nothing: windows)."""
        preset, _, chunk = spec.partition(":")
        try:
            chunk_frames = int(chunk or 0)
        except ValueError:
            chunk_frames = -1
        if not preset or chunk_frames < 0:
            raise DataError(f"--students: {spec!r} is not PRESET[:CHUNK_FRAMES >= 0]")
        return cls(preset, chunk_frames)

    @property
    def key(self) -> str:
        """Its part of a directory name: ``small``, ``deep-c16``."""
        return self.preset + (f"-c{self.chunk_frames}" if self.chunk_frames else "")

    @property
    def label(self) -> str:
        """Its name in reports: ``small (windows)``, ``deep (dense, chunks of 16)``."""
        how = f"dense, chunks of {self.chunk_frames}" if self.chunk_frames else "windows"
        return f"{self.preset} ({how})"

    @property
    def overrides(self) -> str:
        """The ``--params_override`` that selects it."""
        return f"model.vgg.preset={self.preset},data.chunk_frames={self.chunk_frames}"


class StagePlan:
    """The runs of a recipe or a study under one work dir, each made by one stage of ``runner``.

    Args:
      work: the work dir (:mod:`the layout <tfblend.study.plan>`).
      size: the corpus size, a key of :data:`SIZES`.
      runner: a :class:`tfblend.study.stages.StageRunner` (default: one that keeps its stage
        times in ``<work>/report``).
      teacher_epochs, student_epochs: None for the size's budget.
      owner: who runs the plan, for the default runner (``StageRunner``'s ``owner``), e.g.
        "the recipe of work/demo".
    """

    #: The fixed names under a work dir (the runs' names are made by the methods below).
    CORPUS, REPORT, GRAPH = "corpus", "report", "graph"
    EXPORTS, WER, SCORES = "exports", "wer", "scores"

    def __init__(
        self, work: str, size: str, runner=None, teacher_epochs=None, student_epochs=None,
        owner=None,
    ):  # fmt: skip
        if size not in SIZES:
            raise DataError(f"size {size!r} is not one of {sorted(SIZES)}")
        self.work = work
        self.size = size
        self.corpus = self._path(self.CORPUS)
        self.report = self._path(self.REPORT)
        self.graph = self._path(self.GRAPH)
        self.runner = runner if runner is not None else StageRunner(self.report, owner)
        self.epochs = {
            "teacher": teacher_epochs or SIZES[size].teacher_epochs,
            "student": student_epochs or SIZES[size].student_epochs,
        }
        self.wer_test, self.wer_dev = SIZES[size].wer_test, SIZES[size].wer_dev

    def _path(self, name: str) -> str:
        return os.path.join(self.work, name)

    def make_corpus(self, seed: int) -> str:
        """The corpus of the plan's size (train, dev and test), generated with ``seed``."""
        complete = all(set_done(os.path.join(self.corpus, s)) for s in ("train", "dev", "test"))
        self.runner.stage(
            "corpus", complete, "make_corpus", output_dir=self.corpus, size=self.size, seed=seed
        )
        return self.corpus

    @property
    def num_classes(self) -> int:
        """K, from the training set's manifest."""
        return read_manifest(os.path.join(self.corpus, "train"))["num_classes"]

    def k_of(self, value: float) -> int:
        """k from a count (>= 1) or a fraction of K (< 1)."""
        if value >= 1:
            return resolve_k(self.num_classes, k=int(value))
        return resolve_k(self.num_classes, top_fraction=value)

    # Training runs.

    def _train(self, name: str, script: str, **flag_values) -> str:
        directory = self._path(name)
        self.runner.stage(
            name, model_done(directory), script, corpus_dir=self.corpus, model_dir=directory,
            **flag_values,
        )  # fmt: skip
        return directory

    def teacher(self, seed: int) -> str:
        return self._train(
            f"teacher-seed{seed}", "train_teacher", seed=seed, epochs=self.epochs["teacher"]
        )

    def _student_flags(self, student: StudentSpec, seed: int, epochs: int | None) -> dict:
        return {
            "seed": seed,
            "epochs": epochs or self.epochs["student"],
            "params_override": student.overrides,
        }

    def _epochs_key(self, epochs: int | None) -> str:
        """``-e{N}`` in a student's name when it trains for N epochs, not the students' budget."""
        return "" if epochs in (None, self.epochs["student"]) else f"-e{epochs}"

    def cnn(self, student: StudentSpec, seed: int, epochs: int | None = None) -> str:
        return self._train(
            f"cnn-{student.key}{self._epochs_key(epochs)}-seed{seed}", "train_student",
            model="vgg", **self._student_flags(student, seed, epochs),
        )  # fmt: skip

    def dnn(self, seed: int) -> str:
        return self._train(
            f"dnn-seed{seed}", "train_student", model="dnn", seed=seed,
            epochs=self.epochs["student"],
        )  # fmt: skip

    def smoothing(self, student: StudentSpec, epsilon: str, seed: int) -> str:
        return self._train(
            f"smooth-{student.key}-eps{epsilon}-seed{seed}", "train_student", model="vgg",
            label_smoothing=epsilon, **self._student_flags(student, seed, None),
        )  # fmt: skip

    def blend(
        self, student: StudentSpec, targets: str, kind: str, setting, seed: int,
        epochs: int | None = None,
    ) -> str:  # fmt: skip
        alpha, temperature = setting
        name = f"blend_{student.key}_{kind}_a{alpha:g}_T{temperature:g}"
        return self._train(
            f"{name}{self._epochs_key(epochs)}-seed{seed}", "blend", targets_dir=targets,
            alpha=alpha, temperature=temperature, **self._student_flags(student, seed, epochs),
        )  # fmt: skip

    def learning_curve(self, name: str, role: str, directory: str) -> dict:
        """A finished run's frame accuracy after each epoch, from its ``history.csv``: on dev
        and on the training batches (Keras's mean over each epoch's batches, taken while the
        weights were still changing), with its stage's wall seconds (None when stages.json has
        none). ``role``: the model's role, or ``cnn_longer`` / ``blend_longer``."""
        history = read_history(directory)
        if not history.get("val_accuracy") or not history.get("accuracy"):
            raise DataError(f"{directory}/history.csv: no accuracy and val_accuracy per epoch")
        run = os.path.basename(directory)
        return {
            "name": name,
            "role": role,
            "run": run,
            "train_accuracy": history["accuracy"],
            "dev_accuracy": history["val_accuracy"],
            "seconds": self.runner.times.get(run),
        }

    # Teacher targets of the training split.

    def _dump(self, name: str, **flag_values) -> str:
        directory = self._path(name)
        self.runner.stage(name, set_done(directory), "dump_targets", output_dir=directory,
                          **flag_values)  # fmt: skip
        return directory

    def dump_top_k(self, teacher: str, k: int) -> str:
        return self._dump(
            f"targets_top{k}-{os.path.basename(teacher)}", corpus_dir=self.corpus, split="train",
            teacher_dir=teacher, k=k,
        )  # fmt: skip

    def derive(self, dumped: str, dumped_k: int, k: int) -> str:
        """Top-k targets cut from a larger top-k dump (the dump itself when ``k`` is its k)."""
        if k == dumped_k:
            return dumped
        name = os.path.basename(dumped).replace(f"targets_top{dumped_k}-", f"targets_top{k}-")
        return self._dump(name, from_targets=dumped, k=k)

    def dump_sampled(self, teacher: str, draws: int) -> str:
        return self._dump(
            f"targets_sampled{draws}-{os.path.basename(teacher)}", corpus_dir=self.corpus,
            split="train", teacher_dir=teacher, method="sampled", k=draws, seed=0,
        )  # fmt: skip

    def dump_mixture(self, teacher: str, cnn: str, k: int) -> str:
        """Top-k targets of the equal-weight mixture of two models' posteriors."""
        return self._dump(
            f"targets_top{k}-{os.path.basename(teacher)}+{os.path.basename(cnn)}",
            corpus_dir=self.corpus, split="train", teacher_dir=[teacher, cnn],
            teacher_weights="0.5,0.5", k=k,
        )  # fmt: skip

    @staticmethod
    def bytes_per_frame(targets: str) -> float:
        return read_manifest(targets, expected_format="tfblend.targets")["bytes_per_frame"]

    # The models of the report: their runs, per-utterance scores and WER.

    def entry(self, name: str, role: str, dirs: list, **extra) -> dict:
        """One model of the report: ``dirs`` (one run per seed), ``role`` (``teacher``, ``cnn``,
        ``dnn``, ``smoothing``, ``blend``, ``sweep``, ``sampled``, ``ensemble``,
        ``ensemble_blend``; :meth:`windowed_entry`: ``teacher_window``) and the files its
        scoring and decoding write."""
        runs = [os.path.basename(d) for d in dirs]
        return self._entry(name, role, [[d] for d in dirs], runs, extra)

    def ensemble_entry(self, name: str, pairs: list) -> dict:
        """The ensemble of each (teacher, cnn) pair: the mean of their posteriors."""
        runs = ["+".join(os.path.basename(d) for d in pair) for pair in pairs]
        return self._entry(name, "ensemble", [list(p) for p in pairs], runs, {})

    def _entry(self, name, role, members, runs, extra) -> dict:
        return {
            "name": name,
            "role": role,
            "seeds": len(runs),
            "members": members,
            "runs": runs,
            "scores": [self._path(f"{self.SCORES}/{run}.json") for run in runs],
            "wer": [],
            **extra,
        }

    def windowed_entry(self, name: str, dirs: list, context: int) -> dict:
        """Sequence models (the teachers, one run per seed) scored from each frame's window of
        ``context`` frames either side only: role ``teacher_window``. Scored, not decoded (an
        export serves whole utterances)."""
        runs = [f"{os.path.basename(d)}-w{context}" for d in dirs]
        return self._entry(name, "teacher_window", [[d] for d in dirs], runs, {"context": context})

    @staticmethod
    def window_context(model_dir: str) -> int:
        """The frames either side that a window model (a CNN) sees, from its model.json."""
        return int(read_model_info(model_dir, "student")["context"])

    def score(self, models: list) -> None:
        """Per-utterance test frame counts of every seed of every model: one stage, and one per
        window context of the models scored on windows (``context`` in their entry)."""
        runs = {}
        for model in models:
            runs.setdefault(model.get("context"), []).extend(
                f"{output}={'+'.join(members)}"
                for members, output in zip(model["members"], model["scores"], strict=True)
            )
        for context, values in runs.items():
            complete = all(os.path.exists(r.partition("=")[0]) for r in values)
            label, extra = "score", {}
            if context is not None:
                label, extra = f"score ±{context} frames", {"sequence_context": context}
            self.runner.stage(
                label, complete, "score_utterances", corpus_dir=self.corpus, split="test",
                run=values, **extra,
            )  # fmt: skip

    def export(self, model_dir: str) -> str:
        """A finished run exported as ``exports/{run}/1`` (a SavedModel the decoder reads); an
        export there that is not of ``model_dir`` as it is now (a run trained again since,
        :func:`~tfblend.study.stages.export_current`) is replaced."""
        run = os.path.basename(model_dir)
        export = self._path(f"{self.EXPORTS}/{run}/1")
        done = export_current(export, model_dir)
        if not done and self.runner.in_selected_part():
            remove_stale_export(export, model_dir)
        self.runner.stage(
            f"export {run}", done, "export", model_dir=model_dir,
            export_base=self._path(self.EXPORTS), name=run, version=1,
        )  # fmt: skip
        return export

    def decode(self, model: dict, per_voice: int, dev_per_voice: int) -> None:
        """Exports every seed's run(s) and decodes what the exports serve (ensembles: the mean
        of the members' posteriors); fills ``model["wer"]``."""
        for members, run in zip(model["members"], model["runs"], strict=True):
            output = self._path(f"{self.WER}/{run}")
            exports = [self.export(d) for d in members]
            if len(exports) == 1:
                flag_values = {"model": [f"model={exports[0]}"]}
            else:
                names = [f"member{i}" for i in range(len(exports))]
                flag_values = {  # members are decoded as runs of their own
                    "member": [f"{n}={e}" for n, e in zip(names, exports, strict=True)],
                    "ensemble": ["model=" + "+".join(names)],
                }
            result = os.path.join(output, "model", "wer.json")
            newest = newest_change([*map(export_metadata, exports)])  # None: one is missing
            done = os.path.exists(result) and os.path.getmtime(result) >= (newest or float("inf"))
            self.runner.stage(
                f"wer {run}", done, "decode", corpus_dir=self.corpus,
                graph_dir=self.graph, output_dir=output, per_voice=per_voice,
                dev_per_voice=dev_per_voice, **flag_values,
            )  # fmt: skip
            model["wer"].append(result)

    def relative(self, model: dict) -> dict:
        """``model`` as study.json stores it: paths relative to the work dir."""
        out = {k: v for k, v in model.items() if k != "members"}
        out["dirs"] = [[os.path.relpath(d, self.work) for d in m] for m in model["members"]]
        out["scores"] = [os.path.relpath(p, self.work) for p in model["scores"]]
        out["wer"] = [os.path.relpath(p, self.work) for p in model["wer"]]
        return out
