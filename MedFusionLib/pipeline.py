"""The whole fusion job on :class:`~MedFusionLib.image.Image` objects.

Data flows one way: check both images, resample B onto A's grid in world coordinates,
normalise each to ``[0, 1]`` (modality presets, or the luminance of an RGB slice), fuse on
torch, and wrap the result with A's geometry. A pseudo-colour source (an RGB PET or SPECT
slice) is fused on its luminance (BT.601 Y) and its chroma is put back, so the output is
RGB, as the fusion literature does for the Harvard PET/SPECT sets.

Colour fusion (issue 13): when one image is a gray functional image (PET, SPECT) and the other
anatomical (CT, MR), by their :attr:`Image.modality <MedFusionLib.image.Image.modality>`, the
functional image is shown through a colour table and fused with
:func:`~MedFusionLib.functional_fusion.fuse_functional` (lightness fused by the method, the
table's chroma restored, CIELAB); the output is RGB. ``colormap="none"`` keeps the gray path.
Without a method the pair's recommended method and table are used
(:func:`MedFusionLib.recommended.recommended`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from .colour import rgb_to_ycbcr, ycbcr_to_rgb
from .errors import GeometryError, InputError, ParameterError
from .fusion import get_method
from .fusion.runner import DEFAULT_MAX_SLAB_VOXELS, ProgressCallback, fuse_arrays
from .image import Image
from .metrics.clinical import CT_DISPLAY_WINDOW, FUNCTIONAL_DISPLAY_PERCENTILES, MR_DISPLAY_PERCENTILES
from .preprocess import (
    INTERPOLATIONS,
    check_finite_and_varying,
    check_window,
    normalize_intensity,
    resample_to,
)
from .recommended import GRAY_METHOD, functional_side, recommended
from .validation import (
    check_callback,
    check_choice,
    check_device,
    check_image,
    check_int,
    check_name,
    check_transform,
    gray_voxels,
)

DEFAULT_METHOD = GRAY_METHOD
"""The method used when none is given and the pair is not anatomical + functional."""

COLORMAP_AUTO = "auto"
"""``colormap`` default: the recommended colour table when one image is a gray PET or SPECT and
the other CT or MR (by modality), gray fusion otherwise."""

COLORMAP_NONE = "none"
"""``colormap`` value (like ``None``) for gray fusion, whatever the modalities."""


def check_colormap(colormap: object, *, name: str = "colormap") -> str | None:
    """``"auto"``, ``None`` (for ``None`` or ``"none"``) or a known colour table's registry name.

    Raises:
        ParameterError: not a string, or an unknown table (the message names ``name`` and lists
            the known tables).
    """
    from .colormaps import describe_colormap, list_colormaps

    if colormap is None:
        return None
    if not isinstance(colormap, str):
        raise ParameterError(f"{name} must be a colour table name, got {type(colormap).__name__}")
    if colormap.strip().lower() == COLORMAP_NONE:
        return None
    if colormap.strip().lower() == COLORMAP_AUTO:
        return COLORMAP_AUTO
    try:
        return describe_colormap(colormap).name
    except ParameterError:
        known = ", ".join([*list_colormaps(), COLORMAP_NONE])
        raise ParameterError(f"{name}: unknown colour table {colormap!r} (known: {known})") from None


@dataclass(frozen=True)
class FusionPlan:
    """What :func:`fuse_images` does with a pair (see :func:`plan_fusion`).

    Attributes:
        method: the registered method (for colour fusion: the lightness rule).
        parameters: the recommended parameters under the caller's (empty unless ``method`` was
            not given).
        colormap: the colour table's name, or ``None`` for gray fusion.
        functional: which input is the functional one in colour fusion, ``"a"`` or ``"b"``.
        gamut, room: :func:`~MedFusionLib.functional_fusion.fuse_functional`'s gamut handling.
        recommended: whether the method came from :func:`~MedFusionLib.recommended.recommended`.
    """

    method: str
    parameters: dict[str, Any]
    colormap: str | None
    functional: str | None
    gamut: str = "compress"
    room: float = 0.0
    recommended: bool = False


def plan_fusion(
    a: Image,
    b: Image,
    *,
    method: str | None = None,
    colormap: str | None = COLORMAP_AUTO,
    name: str = "colormap",
    name_a: str = "image A",
    name_b: str = "image B",
) -> FusionPlan:
    """Decide gray or colour fusion, the method and the colour table for two images.

    Colour fusion needs one image of modality PET or SPECT stored gray and the other CT or MR
    (not pseudo-colour). ``colormap="auto"`` colours such a pair with the recommended table and
    fuses anything else in gray; ``None``/``"none"`` always fuses in gray; a table name colours
    the pair with that table and is refused for any other pair. With ``method=None`` the
    recommended method (and parameters) for the modalities is used in colour fusion, the gray
    default :data:`DEFAULT_METHOD` in gray fusion.

    Args:
        a, b: the two images (only their modality and colour layout are read).
        method: the caller's method, or ``None``.
        colormap: ``"auto"``, ``None``/``"none"`` or a colour table name.
        name: how errors call the colour table option (``"--colormap"`` in the CLI).
        name_a, name_b: how errors call the two images.

    Raises:
        ParameterError: an unknown table; a table asked for a pair that cannot be colour-fused
            (the message says which modality is missing or which image is RGB).
    """
    colormap = check_colormap(colormap, name=name)
    side = functional_side(a.modality, b.modality)
    reason = None
    if side is None:
        reason = (
            f"{name_a} is {a.modality or 'of unknown modality'} and {name_b} "
            f"{b.modality or 'of unknown modality'}; colour fusion needs one PET or SPECT and one CT or MR "
            "(give the modalities: --modality-a/--modality-b, or read_image(path, modality=...))"
        )
    else:
        (functional, f_name), (anatomical, a_name) = (
            ((b, name_b), (a, name_a)) if side == "b" else ((a, name_a), (b, name_b))
        )
        if functional.is_rgb:
            reason = f"{f_name} ({functional.modality}) is RGB; colour fusion takes a gray functional image"
        elif anatomical.is_rgb and anatomical.is_pseudo_colour:
            reason = f"{a_name} ({anatomical.modality}) is pseudo-colour RGB; colour fusion takes a gray one"
    if colormap is not None and colormap != COLORMAP_AUTO and reason is not None:
        raise ParameterError(f"{name} {colormap}: cannot colour-fuse: {reason}")
    colour = colormap is not None and reason is None
    if not colour:
        return FusionPlan(
            method=DEFAULT_METHOD if method is None else method,
            parameters={},
            colormap=None,
            functional=None,
            recommended=method is None,
        )
    choice = recommended(a.modality, b.modality)
    return FusionPlan(
        method=choice.method if method is None else method,
        parameters=dict(choice.parameters) if method is None else {},
        colormap=choice.colormap if colormap == COLORMAP_AUTO else colormap,
        functional=side,
        gamut=choice.gamut,
        room=choice.room,
        recommended=method is None,
    )


def merge_parameters(base: Mapping[str, Any], given: Any) -> Any:
    """``given`` over ``base`` (a non-mapping ``given`` is passed on for the method to refuse)."""
    if not base:
        return given
    if given is None:
        return dict(base)
    return {**base, **given} if isinstance(given, Mapping) else given


@dataclass(frozen=True)
class FusionResult:
    """The fused image and a record of how it was made."""

    image: Image
    method: str
    parameters: dict[str, Any]
    device: str
    seconds: float
    colour_source: str | None = None
    notes: list[str] = field(default_factory=list)
    colormap: str | None = None
    modalities: tuple[str | None, str | None] = (None, None)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description of what was done."""
        return {
            "method": self.method,
            "parameters": self.parameters,
            "device": self.device,
            "seconds": round(self.seconds, 4),
            "size": list(self.image.size),
            "spacing": list(self.image.spacing),
            "rgb": self.image.is_rgb,
            "colour_source": self.colour_source,
            "colormap": self.colormap,
            "modalities": list(self.modalities),
        }


def _normalised_gray(image: Image, *, name: str, window: str | tuple[float, float] | None) -> np.ndarray:
    """``[0, 1]`` float32 voxels: luminance for RGB input, modality presets otherwise.

    An RGB slice's luminance is already in ``[0, 1]`` (8-bit / 255, the field's protocol) and
    is used as it is unless a window is asked for; as in :func:`normalize_intensity`, its NaN
    voxels count as background (the finite minimum).
    """
    if image.is_rgb:
        image = image.with_array(gray_voxels(image, name=name))
        if window is None:
            low, _ = check_finite_and_varying(image.array, name=name)
            gray = image.array
            bad = ~np.isfinite(gray)
            if bad.any():
                gray = np.where(bad, np.float32(low), gray)
            return gray
    return normalize_intensity(image, window=window, name=name)


def _lost_on_grid(a: Image, b: Image, b_on_a: Image, *, name_a: str, name_b: str) -> GeometryError:
    """B varies on its own grid but not once resampled onto A's: the grids barely meet."""
    gray = gray_voxels(b_on_a, name=name_b)
    finite = gray[np.isfinite(gray)] if gray.dtype.kind == "f" else gray.ravel()
    what = f"constant ({float(finite[0]):g})" if finite.size else "not finite"
    return GeometryError(
        f"{name_b} varies on its own grid but is {what} where {name_a}'s grid samples it "
        f"({name_a}: {_grid_text(a)}; {name_b}: {_grid_text(b)}); check both images' spacing and origin"
    )


def _grid_text(image: Image) -> str:
    size = "x".join(map(str, image.size))
    spacing = " x ".join(f"{s:g}" for s in image.spacing)
    origin = ", ".join(f"{o:g}" for o in image.origin)
    return f"{size} voxels of {spacing} mm at ({origin})"


def _spread(values: np.ndarray) -> float:
    """Maximum minus minimum of the finite values (NaN when there are none)."""
    finite = values[np.isfinite(values)]
    return float(finite.max() - finite.min()) if finite.size else float("nan")


def _modality_pair(a: Any, b: Any) -> str | None:
    """The modality pair a network's weights are chosen by (``gain_fusion_net``): PET or SPECT with
    an anatomical image, MR with CT; ``None`` when the modalities do not say."""
    modalities = {getattr(a, "modality", None), getattr(b, "modality", None)}
    if "PET" in modalities:
        return "MRI_PET"
    if "SPECT" in modalities:
        return "MRI_SPECT"
    return "MRI_CT" if modalities == {"MR", "CT"} else None


def fuse_images(
    a: Image,
    b: Image,
    *,
    method: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    device: str = "auto",
    window_a: str | tuple[float, float] | None = None,
    window_b: str | tuple[float, float] | None = None,
    interpolation: str = "linear",
    name_a: str = "image A",
    name_b: str = "image B",
    max_slab_voxels: int = DEFAULT_MAX_SLAB_VOXELS,
    progress: ProgressCallback | None = None,
    transform: sitk.Transform | None = None,
    colormap: str | None = COLORMAP_AUTO,
) -> FusionResult:
    """Fuse ``b`` into ``a``'s grid with a registered method, in gray or in colour.

    Colour fusion happens when one image is a gray PET or SPECT and the other a CT or MR (by
    :attr:`Image.modality <MedFusionLib.image.Image.modality>`) and ``colormap`` is not
    ``"none"`` (see :func:`plan_fusion`): the anatomical image is shown as a reader sees it
    (CT through the soft-tissue window, level 40 HU and width 400 HU, MR through its 0.5-99.5
    percentiles; ``window_a``/``window_b`` override these), the functional image is scaled by
    its 0.5-99.5 percentiles over ``a``'s grid (or its window), and
    :func:`~MedFusionLib.functional_fusion.fuse_functional` fuses their lightnesses with
    ``method`` and restores the table's chroma. The output is RGB float32 in ``[0, 1]`` on
    ``a``'s grid, whichever input is the functional one: when ``a`` is the PET, the CT or MR is
    resampled onto the PET's (coarser) grid, so pass the anatomical image as ``a`` to keep its
    detail. Colour fusion runs on the whole volume at once (``max_slab_voxels`` and
    ``progress`` slabs apply to gray fusion; ``progress`` is called once at the end). Pairs
    whose modalities are unknown are fused in gray exactly as before colour fusion existed.

    Args:
        a: the reference (usually anatomical) image; the output has its geometry.
        b: the second image, resampled onto ``a``'s grid in world coordinates.
        method: registry name; ``None`` picks the method recommended for the modality pair
            (:func:`~MedFusionLib.recommended.recommended`; :data:`DEFAULT_METHOD` in gray).
        parameters: overrides of the method's defaults (of the recommended parameters when
            ``method`` is ``None``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
        window_a, window_b: intensity window (preset name or ``(level, width)``) overriding
            the modality preset of each image.
        interpolation: for resampling ``b`` (``linear``, ``nearest`` or ``bspline``).
        name_a, name_b: how errors name the two inputs (file paths in the CLI).
        max_slab_voxels: volumes above this fuse in overlapping slabs.
        progress: ``progress(done, total)`` after each slab.
        transform: a registration result (``a``'s points to ``b``'s, ITK's convention) used
            when resampling ``b`` onto ``a``; see :mod:`MedFusionLib.registration`.
        colormap: ``"auto"`` (default: the recommended table for an anatomical + functional
            pair, gray otherwise), ``None`` or ``"none"`` (gray), or a table name of
            :mod:`MedFusionLib.colormaps` (refused for a pair that cannot be colour-fused).

    Returns:
        A :class:`FusionResult` whose image is float32 in ``[0, 1]`` (RGB when colour-fused or
        when a source was pseudo-colour) on ``a``'s grid; ``colormap`` names the table used.

    Example:
        >>> from MedFusionLib.io import read_image
        >>> result = fuse_images(read_image("t1.nii.gz"), read_image("pet.nii.gz"))  # doctest: +SKIP
    """
    start = time.perf_counter()
    colormap = check_colormap(colormap)
    plan = None
    if isinstance(a, Image) and isinstance(b, Image):  # otherwise check_image refuses them below
        plan = plan_fusion(
            a,
            b,
            method=method,
            colormap=colormap,
            name_a=name_a if isinstance(name_a, str) else "image A",
            name_b=name_b if isinstance(name_b, str) else "image B",
        )
    spec = get_method(plan.method if plan is not None else DEFAULT_METHOD if method is None else method)
    params = spec.resolve_parameters(
        merge_parameters(plan.parameters if plan is not None else {}, parameters)
    )
    if not (isinstance(parameters, Mapping) and "pair" in parameters):  # the caller's choice stands
        params = spec.with_modality_pair(params, _modality_pair(a, b))
    dev = check_device(device)
    window_a = check_window(window_a, name="window_a")
    window_b = check_window(window_b, name="window_b")
    check_choice(interpolation, INTERPOLATIONS, name="interpolation")
    check_int(max_slab_voxels, name="max_slab_voxels", low=1)
    check_callback(progress, name="progress")
    name_a, name_b = check_name(name_a, name="name_a"), check_name(name_b, name="name_b")
    check_image(a, name=name_a)
    check_image(b, name=name_b)
    if a.ndim != b.ndim:
        raise InputError(f"cannot fuse a {a.ndim}-D image ({name_a}) with a {b.ndim}-D image ({name_b})")
    if a.ndim not in spec.dims:
        raise InputError(f"{spec.name} does not fuse {a.ndim}-D images ({name_a})")
    check_transform(transform, ndim=a.ndim, name="transform")

    if plan is None:  # not reached: check_image refused anything but an Image
        plan = plan_fusion(a, b, method=spec.name, colormap=colormap, name_a=name_a, name_b=name_b)
    if plan.colormap is not None:
        return _fuse_in_colour(
            a,
            b,
            plan=plan,
            spec_name=spec.name,
            params=params,
            device=dev,
            window_a=window_a,
            window_b=window_b,
            interpolation=interpolation,
            name_a=name_a,
            name_b=name_b,
            progress=progress,
            transform=transform,
            start=start,
        )

    # each input's content is checked on its own grid, before any resampling
    gray_a = _normalised_gray(a, name=name_a, window=window_a)
    source_spread = None
    if transform is not None or not b.same_grid(a):
        low_b, high_b = check_finite_and_varying(gray_voxels(b, name=name_b), name=name_b)
        source_spread = high_b - low_b
    b_on_a = resample_to(
        b, a, interpolation=interpolation, transform=transform, name=name_b, reference_name=name_a
    )
    if source_spread is not None and _spread(gray_voxels(b_on_a, name=name_b)) <= 1e-6 * source_spread:
        # what varies by a millionth of B's own range on A's grid is interpolation round-off, not content
        raise _lost_on_grid(a, b, b_on_a, name_a=name_a, name_b=name_b)
    try:
        gray_b = _normalised_gray(b_on_a, name=name_b, window=window_b)
    except InputError:
        if b_on_a is b:
            raise
        raise _lost_on_grid(a, b, b_on_a, name_a=name_a, name_b=name_b) from None

    fused = fuse_arrays(
        gray_a,
        gray_b,
        method=spec,
        parameters=params,
        device=dev,
        max_slab_voxels=max_slab_voxels,
        progress=progress,
    )

    colour_source = None
    if b_on_a.is_pseudo_colour or a.is_pseudo_colour:
        colour_source, source = (name_b, b_on_a) if b_on_a.is_pseudo_colour else (name_a, a)
        rgb = source.array if source.array.dtype in (np.uint8, np.uint16) else source.array.astype(np.float32)
        _, cb, cr = rgb_to_ycbcr(rgb)  # uint8 / 255, uint16 / 65535, floats as they are
        cb, cr = (np.where(np.isfinite(c), c, np.float32(0.5)) for c in (cb, cr))  # NaN: no chroma
        fused = ycbcr_to_rgb(fused, cb, cr).astype(np.float32)

    image = Image(
        array=fused,
        spacing=a.spacing,
        origin=a.origin,
        direction=a.direction,
        modality=None,
    )
    return FusionResult(
        image=image,
        method=spec.name,
        parameters=params,
        device=str(dev),
        seconds=time.perf_counter() - start,
        colour_source=colour_source,
        modalities=(a.modality, b.modality),
    )


def _colour_display(
    image: Image, *, name: str, window: str | tuple[float, float] | None, functional: bool
) -> np.ndarray:
    """``[0, 1]`` float32 display of one input of colour fusion (see :func:`fuse_images`)."""
    if image.is_rgb:  # gray stored as RGB (pseudo-colour was refused by plan_fusion)
        image = image.with_array(gray_voxels(image, name=name))
    if window is not None:
        return normalize_intensity(image, window=window, name=name)
    if functional:
        return normalize_intensity(image, percentiles=FUNCTIONAL_DISPLAY_PERCENTILES, name=name)
    if image.modality == "CT":
        return normalize_intensity(image, window=CT_DISPLAY_WINDOW, name=name)
    return normalize_intensity(image, percentiles=MR_DISPLAY_PERCENTILES, name=name)


def _fuse_in_colour(
    a: Image,
    b: Image,
    *,
    plan: FusionPlan,
    spec_name: str,
    params: dict[str, Any],
    device: Any,
    window_a: str | tuple[float, float] | None,
    window_b: str | tuple[float, float] | None,
    interpolation: str,
    name_a: str,
    name_b: str,
    progress: ProgressCallback | None,
    transform: sitk.Transform | None,
    start: float,
) -> FusionResult:
    """The colour half of :func:`fuse_images` (arguments already checked)."""
    from .functional_fusion import fuse_functional

    a_is_functional = plan.functional == "a"
    # each input's content is checked on its own grid, before any resampling
    display_a = _colour_display(a, name=name_a, window=window_a, functional=a_is_functional)
    if transform is not None or not b.same_grid(a):
        check_finite_and_varying(gray_voxels(b, name=name_b), name=name_b)
    b_on_a = resample_to(
        b, a, interpolation=interpolation, transform=transform, name=name_b, reference_name=name_a
    )
    try:
        display_b = _colour_display(b_on_a, name=name_b, window=window_b, functional=not a_is_functional)
    except InputError:
        if b_on_a is b:
            raise
        raise _lost_on_grid(a, b, b_on_a, name_a=name_a, name_b=name_b) from None
    anatomical, functional = (display_b, display_a) if a_is_functional else (display_a, display_b)
    fused = fuse_functional(
        anatomical,
        functional,
        colormap=str(plan.colormap),
        method=spec_name,
        parameters=params,
        gamut=plan.gamut,
        room=plan.room,
        device=device,
        spacing=a.spacing,
    )
    if progress is not None:
        progress(1, 1)
    image = Image(array=fused, spacing=a.spacing, origin=a.origin, direction=a.direction, modality=None)
    return FusionResult(
        image=image,
        method=spec_name,
        parameters=params,
        device=str(device),
        seconds=time.perf_counter() - start,
        colormap=plan.colormap,
        modalities=(a.modality, b.modality),
    )
