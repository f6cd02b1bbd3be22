"""What prefdata knows about the public data sets its importers read: licence, home page,
citation, and whether the text is known to be offensive.

`SOURCES` is keyed by the source name an importer gives its rows by default (the `source`
column). An importer whose format is one of these data sets records the licence and the data
set's name in every row's `provenance` (`license`, `dataset`; `finish(..., dataset=...)`), so
they survive a renamed `source`; the dataset card (prefdata.report.card) reads them, and falls
back to this table by source name. Licences are Hugging Face licence ids.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceInfo:
    """One public data set: `title`, `license` (a Hugging Face licence id), `url` (its home),
    `citation` (BibTeX), `content_warning` (why its text may offend, or None)."""

    title: str
    license: str
    url: str
    citation: str
    content_warning: str | None = None


_GSM8K = SourceInfo(
    title="GSM8K (grade school math)",
    license="mit",
    url="https://github.com/openai/grade-school-math",
    citation=(
        "@article{cobbe2021gsm8k,\n"
        "  title={Training Verifiers to Solve Math Word Problems},\n"
        "  author={Cobbe, Karl and Kosaraju, Vineet and Bavarian, Mohammad and others},\n"
        "  journal={arXiv preprint arXiv:2110.14168},\n"
        "  year={2021}\n}"
    ),
)

SOURCES: dict[str, SourceInfo] = {
    "hh-rlhf": SourceInfo(
        title="Anthropic HH-RLHF (helpful and harmless human preference data)",
        license="mit",
        url="https://github.com/anthropics/hh-rlhf",
        citation=(
            "@article{bai2022training,\n"
            "  title={Training a Helpful and Harmless Assistant with Reinforcement Learning "
            "from Human Feedback},\n"
            "  author={Bai, Yuntao and Jones, Andy and Ndousse, Kamal and others},\n"
            "  journal={arXiv preprint arXiv:2204.05862},\n"
            "  year={2022}\n}"
        ),
        content_warning=(
            "HH-RLHF holds red-teaming conversations (its harmless-base part above all): "
            "prompts and responses with offensive, violent, sexual or otherwise upsetting text"
        ),
    ),
    "pandalm": SourceInfo(
        title="PandaLM human-annotated test set",
        license="apache-2.0",
        url="https://github.com/WeOpenML/PandaLM",
        citation=(
            "@article{wang2023pandalm,\n"
            "  title={PandaLM: An Automatic Evaluation Benchmark for LLM Instruction Tuning "
            "Optimization},\n"
            "  author={Wang, Yidong and Yu, Zhuohao and Zeng, Zhengran and others},\n"
            "  journal={arXiv preprint arXiv:2306.05087},\n"
            "  year={2023}\n}"
        ),
    ),
    "oasst": SourceInfo(
        title="OpenAssistant Conversations (oasst1)",
        license="apache-2.0",
        url="https://huggingface.co/datasets/OpenAssistant/oasst1",
        citation=(
            "@article{kopf2023openassistant,\n"
            "  title={OpenAssistant Conversations -- Democratizing Large Language Model "
            "Alignment},\n"
            '  author={K{\\"o}pf, Andreas and Kilcher, Yannic and von R{\\"u}tte, Dimitri '
            "and others},\n"
            "  journal={arXiv preprint arXiv:2304.07327},\n"
            "  year={2023}\n}"
        ),
    ),
    "hhh-alignment": SourceInfo(
        title="HHH alignment evaluation (BIG-bench)",
        license="apache-2.0",
        url="https://github.com/google/BIG-bench/tree/main/bigbench/benchmark_tasks/hhh_alignment",
        citation=(
            "@article{askell2021general,\n"
            "  title={A General Language Assistant as a Laboratory for Alignment},\n"
            "  author={Askell, Amanda and Bai, Yuntao and Chen, Anna and others},\n"
            "  journal={arXiv preprint arXiv:2112.00861},\n"
            "  year={2021}\n}"
        ),
        content_warning="its harmless category holds requests for harmful help",
    ),
    "gsm8k": _GSM8K,
    "gsm8k-solutions": _GSM8K,
    "math500": SourceInfo(
        title="MATH-500 (the PRM800K test subset of MATH)",
        license="mit",
        url="https://github.com/openai/prm800k",
        citation=(
            "@article{lightman2023lets,\n"
            "  title={Let's Verify Step by Step},\n"
            "  author={Lightman, Hunter and Kosaraju, Vineet and Burda, Yura and others},\n"
            "  journal={arXiv preprint arXiv:2305.20050},\n"
            "  year={2023}\n}"
        ),
    ),
}


def source_info(name: str | None) -> SourceInfo | None:
    """What is known about the data set called `name` (a source or a `dataset` name)."""
    return SOURCES.get(name or "")
