"""timm backbones: any model `timm.create_model` builds, named `timm:NAME`, with a block map from the model itself.

timm models describe their own layer groups (`group_matcher`: stem, stages or transformer blocks, head), which
timm's layer-wise decay uses. studylib turns the coarse groups into its block map: the unit of gradual
unfreezing, surgical tuning, Auto-RGN's per-block rates, the per-block logs and CKA. So no block map is written
by hand, and every strategy runs on ConvNeXt, EfficientNet, ResNet or ViT the way it runs on the study's CNNs.
"""
from __future__ import annotations

import difflib
import functools

import torch
from torch import nn

from ..core.registry import UnknownNameError

PREFIX = "timm:"
# The families the tests check, as (timm's tiny random-init test model, a full-size example): docs/backbones.md.
TESTED = {"ConvNeXt": ("test_convnext", "convnext_tiny"), "ViT": ("test_vit", "vit_small_patch16_224"),
          "EfficientNet": ("test_efficientnet", "efficientnet_b0"),
          "EfficientNet, GroupNorm": ("test_efficientnet_gn", "efficientnet_b0_gn"),
          "ResNet": ("test_resnet", "resnet50"), "ByobNet": ("test_byobnet", "resnet33ts"),
          "NFNet, no norm layers": ("test_nfnet", "nf_resnet50")}
PROBE_SIDES = (8, 16, 32, 48, 64, 96, 128, 224)  # the smallest side a model's downsampling leaves a pixel for


def timm_module():
    """timm, or an UnknownNameError saying how to install it (it is an optional dependency)."""
    try:
        import timm
    except ImportError:
        raise UnknownNameError("backbone timm:... needs timm: pip install 'studylib[timm]' (or pip install timm)") \
            from None
    return timm


def make_spec(name: str):
    """The BackboneSpec of `timm:NAME` (None for a name without the prefix): the registry's maker for backbones.

    NAME may carry a weight tag (`convnext_tiny.fb_in22k`): it pins which weights `weights: pretrained` loads."""
    from .spec import BackboneSpec

    if not name.startswith(PREFIX):
        return None
    model_name = name.removeprefix(PREFIX)
    timm = timm_module()
    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else \
            "list them with python -c \"import timm; print(timm.list_models('*convnext*'))\""
        raise UnknownNameError(f"timm has no model {model_name!r}; {hint}")
    try:  # a bad weight tag, a model timm cannot build: the registry's message, not timm's traceback
        kwargs = _build_kwargs(timm, model_name)
        pretrained_cfg = timm.models.get_pretrained_cfg(model_name)
        head = getattr(pretrained_cfg, "classifier", None) or _classifier(timm, model_name)
        build = functools.partial(timm.create_model, model_name, pretrained=False, **kwargs)
        min_size = _min_side(build)
    except Exception as err:
        raise UnknownNameError(f"timm cannot build {model_name!r} ({type(err).__name__}: "
                               f"{str(err).splitlines()[0][:160] if str(err) else ''}); check the name and its weight "
                               "tag with timm.list_models() / timm.list_pretrained()") from None
    if not isinstance(head, str):
        raise UnknownNameError(f"timm's {model_name} has {len(head)} classifiers ({', '.join(head)}; a distilled "
                               "model): studylib replaces one head; choose its non-distilled variant")
    statistics = {k: tuple(getattr(pretrained_cfg, k)) for k in ("mean", "std")
                  if len(getattr(pretrained_cfg, k, None) or ()) == 3}  # its weights' input statistics, as timm's
    return BackboneSpec(name, f"timm {model_name}; blocks from timm's group_matcher", build,
                        _blocks, head, None, channels_last=True, min_size=min_size,
                        named_weights=functools.partial(_pretrained_state, timm, model_name, kwargs),
                        weight_names=("pretrained",), **statistics)


def _classifier(timm, model_name: str) -> str:
    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained=False)
    return model.pretrained_cfg["classifier"]


def _build_kwargs(timm, model_name: str) -> dict:
    """ViTs take any image side a patch divides (position embeddings interpolated): studylib's sizes vary."""
    try:
        with torch.device("meta"):
            timm.create_model(model_name, pretrained=False, dynamic_img_size=True)
        return {"dynamic_img_size": True}
    except TypeError:  # CNNs take any side already, and refuse the argument
        return {}


def _min_side(build) -> int:
    """The smallest probed image side a forward pass of the model takes (on the meta device: no memory, no time)."""
    with torch.device("meta"):
        model = build().eval()
        for side in PROBE_SIDES:
            try:
                model(torch.empty(1, 3, side, side))
                return side
            except (RuntimeError, ValueError, AssertionError):
                continue
    return PROBE_SIDES[-1]


def _pretrained_state(timm, model_name: str, kwargs: dict, weights: str, progress: bool) -> dict:
    """timm's pretrained weights of the model (its tag, if the name has one): downloaded from the Hugging Face hub."""
    from .spec import WeightsError

    if weights != "pretrained":
        raise WeightsError(f"timm:{model_name} has weights 'pretrained' (timm's, pinned by a tag in the name, e.g. "
                           f"timm:{model_name.split('.')[0]}.<tag>), a checkpoint file path, or none; not {weights!r}")
    try:
        return timm.create_model(model_name, pretrained=True, **kwargs).state_dict()
    except Exception as err:  # huggingface_hub raises its own offline and HTTP errors
        raise WeightsError(f"could not get timm's pretrained weights of {model_name} ({type(err).__name__}: "
                           f"{str(err).splitlines()[0][:160] if str(err) else ''}). Offline, download them on a "
                           "machine with network (timm.create_model(NAME, pretrained=True), then save the state dict "
                           "with safetensors) and pass weights=/path/to/file.safetensors") from None


def _blocks(model: nn.Module) -> dict[str, list[str]]:
    """studylib's block map of a timm model: timm's coarse parameter groups in order, each as the largest modules
    wholly inside it; named stem (when timm names one), the first module of the group (stages.0, blocks.11,
    layer1), and head (the last group: the classifier with whatever timm puts beside it, e.g. ConvNeXt's norm)."""
    from timm.models import group_parameters

    matcher = model.group_matcher(coarse=True)  # a dict of regexes, or for a few models a function
    groups = list(group_parameters(model, matcher).values())
    owner = {p: i for i, params in enumerate(groups) for p in params}
    blocks: dict[str, list[str]] = {}
    for i, params in enumerate(groups):
        prefixes = _cover(params, owner, i)
        named_stem = isinstance(matcher, dict) and "stem" in matcher
        name = "head" if i == len(groups) - 1 else "stem" if i == 0 and named_stem else prefixes[0]
        blocks[name if name not in blocks else f"{name}.{i}"] = prefixes
    return blocks


def _cover(params: list[str], owner: dict[str, int], group: int) -> list[str]:
    """The fewest module names (or parameter names, for a model's own tensors like cls_token) that hold exactly
    `params`: for each parameter its largest enclosing module whose parameters all belong to `group`."""
    groups_under: dict[str, set[int]] = {}
    for p, g in owner.items():
        parts = p.split(".")
        for k in range(1, len(parts)):
            groups_under.setdefault(".".join(parts[:k]), set()).add(g)
    cover: list[str] = []
    for p in params:
        parts = p.split(".")
        ancestors = (".".join(parts[:k]) for k in range(1, len(parts)))
        top = next((a for a in ancestors if groups_under[a] == {group}), p)
        if top not in cover:
            cover.append(top)
    return cover
