"""The page of ``medfusion serve``: controls on the left, three slice views (trame-slicer).

The slice views are Slicer's own (``trame_slicer``: slicer-core's MRML scene, slice logics and
displayable managers rendered offscreen and streamed to the page as images), so the fused
volume, the functional overlay, the crosshair, window/level (left drag) and slice scrolling
(wheel, or the slider at each view's foot) behave as in the Slicer application. The work is
done by :class:`~MedFusionLib.web.review.FusionReview`; this module only binds it to the page.

Elements that automated review relies on carry ``data-testid`` attributes (:data:`TEST_IDS`);
the ``status`` element reads ``done`` when a result is shown and ``error: <message>`` when a
choice or a fusion failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import MedFusionError
from ..job import REGISTRATION_TYPES
from .catalogue import Catalogue
from .review import Choice, FusionReview, colormap_choices, method_choices, parameter_hint

VIEWS = ("axial", "sagittal", "coronal")
TEST_IDS = (
    "fixed-select",
    "moving-select",
    "method-select",
    "colormap-select",
    "opacity-slider",
    "apply",
    "cancel",
    "status",
    *(f"view-{name}" for name in VIEWS),
    "save",
)
POLL_SECONDS = 0.05
FRAME_RATE = 60.0
TITLE = "MedFusion review"

_STYLE = """
.mf-panel { padding: 12px; display: flex; flex-direction: column; gap: 8px; font-size: 14px; }
.mf-panel label { display: flex; flex-direction: column; gap: 2px; color: #bbb; }
.mf-panel select, .mf-panel input[type=range], .mf-panel input.mf-text { width: 100%; color: #eee; background: #222;
  border: 1px solid #555; border-radius: 4px; padding: 4px; }
.mf-panel select:focus { outline: 2px solid #4a90d9; }
.mf-status { font-weight: 600; word-break: break-word; }
.mf-views { display: flex; flex-direction: row; width: 100%; height: 100%; background: black; }
.mf-view { flex: 1; position: relative; border: 1px solid #222; min-width: 0; }
.mf-note { color: #999; font-size: 12px; }
"""


def _test_id(name: str) -> list[str]:
    return [f'data-testid="{name}"']


def _options(html: Any, items: str) -> None:
    html.Option("{{ item.title }}", v_for=f"item in {items}", key="item.value", value=("item.value",))


class ReviewApp:
    """The trame application: state, page and the polling of the running job.

    Args:
        server: a trame server (``trame.app.get_server(client_type="vue3")``).
        data: the data folder (everything the page can open).
        save_dir: where Save writes.
        device: the engine's device.
    """

    def __init__(self, server: Any, *, data: Path, save_dir: Path, device: str = "auto") -> None:
        from trame_slicer import module as trame_slicer_module
        from trame_slicer.core import SlicerApp
        from trame_slicer.rca_view import register_rca_factories
        from trame_slicer.views import ViewLayoutDefinition

        self.server = server
        self.state = server.state
        server.enable_module(trame_slicer_module)
        self.slicer = SlicerApp()
        # every view keeps its full frame rate, hovered or not (linked views change together)
        register_rca_factories(self.slicer.view_manager, server, target_fps=FRAME_RATE, blur_fps=FRAME_RATE)
        definitions = {
            "axial": ViewLayoutDefinition.axial_view(),
            "sagittal": ViewLayoutDefinition.sagittal_view(),
            "coronal": ViewLayoutDefinition.coronal_view(),
        }
        self.views = {name: self.slicer.view_manager.create_view(d) for name, d in definitions.items()}
        for view in self.views.values():
            # trame-slicer asks for 8x multisampling, which a 2-D slice image does not need and
            # which triples the time of a frame on a CPU renderer (Mesa llvmpipe): 98 -> 32 ms
            view.render_window().SetMultiSamples(0)
        self.slicer.view_manager.set_current_view_ids([v.get_singleton_tag() for v in self.views.values()])
        self._set_up_interaction()
        self.catalogue = Catalogue(data)
        self.review = FusionReview(
            self.catalogue,
            self.slicer.scene,
            self.slicer.app_logic,
            save_dir=save_dir,
            device=device,
            on_change=self._publish,
        )
        self._init_state()
        self._build_page()
        self._poller: asyncio.Task[None] | None = None
        server.controller.on_server_ready.add(self._start_polling)
        server.controller.on_server_exited.add(self._stop)

    # --- state ------------------------------------------------------------------------------
    def _set_up_interaction(self) -> None:
        """Left drag adjusts window/level (Slicer's window/level mouse mode); the crosshair, moved
        with Shift + mouse, is shown in every view (linked cursors)."""
        scene = self.slicer.scene
        interaction = scene.GetFirstNodeByClass("vtkMRMLInteractionNode")
        if interaction is not None:
            interaction.SetCurrentInteractionMode(interaction.AdjustWindowLevel)
        crosshair = scene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
        if crosshair is not None:
            crosshair.SetCrosshairMode(crosshair.ShowSmallBasic)

    def _init_state(self) -> None:
        state = self.state
        state.trame__title = TITLE
        state.studies = []
        state.study = None
        state.volumes = []
        state.lesions = []
        state.methods = method_choices()
        state.colormaps = colormap_choices()
        state.registrations = [{"value": r, "title": r} for r in REGISTRATION_TYPES]
        state.fixed_key = ""
        state.moving_key = ""
        state.lesion_key = ""
        state.registration = "none"
        state.method = "recommended"
        state.colormap = "auto"
        state.parameters = ""
        state.parameter_hint = parameter_hint("recommended")
        state.opacity_percent = 0
        state.running = False
        state.progress = 0
        state.status = "idle"
        state.message = ""
        state.readout = ""
        state.saved = ""
        state.has_result = False
        state.runs = 0
        self.refresh()
        state.change("study")(self._on_study)
        state.change("fixed_key")(self._on_fixed)
        state.change("opacity_percent")(self._on_opacity)
        state.change("method")(self._on_method)
        state.change("fixed_key", "moving_key", "lesion_key")(self._prefetch)

    def refresh(self) -> None:
        """Scan the data folder again (new files, a new study)."""
        self._entries = self.catalogue.scan()
        studies = self.catalogue.studies()
        self.state.studies = [{"value": key, "title": label} for key, label in studies]
        if self.state.study not in {key for key, _ in studies}:
            self.state.study = studies[0][0] if studies else None
        self._list_volumes()

    def _list_volumes(self) -> None:
        study = self.state.study
        volumes = self.catalogue.volumes(study) if study is not None else []
        self.state.volumes = [{"value": v.key, "title": v.label} for v in volumes]
        masks = [e for e in self._entries if e.is_mask and e.study == study]
        self.state.lesions = [{"value": "", "title": "none"}] + [
            {"value": m.key, "title": m.label} for m in masks
        ]
        keys = {v.key for v in volumes}
        if self.state.fixed_key not in keys or self.state.moving_key not in keys:
            self.state.fixed_key, self.state.moving_key = _default_pair(volumes)

    def _on_study(self, **_: Any) -> None:
        self._list_volumes()

    def _on_fixed(self, fixed_key: str = "", **_: Any) -> None:
        """Pick the fixed volume's own lesion mask when it has one (the readout needs it)."""
        with contextlib.suppress(MedFusionError):  # a bad key is reported by Apply
            self.state.lesion_key = self.catalogue.entry(fixed_key).lesion or ""

    def _on_method(self, method: str = "recommended", **_: Any) -> None:
        self.state.parameter_hint = parameter_hint(method)

    def _prefetch(self, **_: Any) -> None:
        """Read the chosen volumes while the user goes on choosing."""
        self.review.prefetch(self._choice())

    def _on_opacity(self, opacity_percent: Any = 0, **_: Any) -> None:
        try:
            self.review.set_opacity(float(opacity_percent) / 100.0)
        except (TypeError, ValueError) as error:
            self.state.status = f"error: opacity: {error}"
            return
        self._render()

    def _publish(self) -> None:
        """Copy the review's status into the page state (called on every change)."""
        review, state = self.review, self.state
        state.status = review.status
        state.message = review.message
        state.progress = round(100 * review.progress)
        state.running = review.running
        state.has_result = review.shown is not None
        state.saved = f"saved {review.saved.name} in {review.saved.parent}" if review.saved else ""
        state.readout = _readout_text(review.readout())
        self._render()

    def _render(self) -> None:
        for view in self.views.values():
            view.schedule_render()

    # --- actions ----------------------------------------------------------------------------
    def apply(self) -> None:
        state = self.state
        state.runs += 1
        self.review.apply(self._choice())

    def _choice(self) -> Choice:
        state = self.state
        return Choice(
            fixed=state.fixed_key or None,
            moving=state.moving_key or None,
            registration=state.registration,
            method=state.method,
            colormap=state.colormap,
            lesion=state.lesion_key or None,
            parameters=state.parameters or "",
        )

    def cancel(self) -> None:
        self.review.cancel()

    def save(self) -> None:
        self.review.save()

    async def _poll_forever(self) -> None:
        while True:
            if self.review.busy:
                with self.state:
                    self.review.poll()
            await asyncio.sleep(POLL_SECONDS)

    def _start_polling(self, **_: Any) -> None:
        self._poller = asyncio.get_event_loop().create_task(self._poll_forever())

    def _stop(self, **_: Any) -> None:
        if self._poller is not None:
            self._poller.cancel()
        self.review.close()

    # --- page -------------------------------------------------------------------------------
    def _build_page(self) -> None:
        from trame.ui.vuetify3 import SinglePageWithDrawerLayout
        from trame.widgets import client, html
        from trame.widgets import vuetify3 as v3
        from trame_slicer.app.logic import get_view_trame_id

        with SinglePageWithDrawerLayout(self.server, theme="dark") as layout:
            self.layout = layout
            layout.title.set_text(TITLE)
            client.Style(_STYLE)
            layout.drawer.width = 340
            with layout.drawer, html.Div(classes="mf-panel"):
                with html.Label("Study", v_show="studies.length > 1"):
                    with html.Select(v_model=("study",), raw_attrs=_test_id("study-select")):
                        _options(html, "studies")
                for label, model, items, test_id in (
                    ("Fixed (anatomy)", "fixed_key", "volumes", "fixed-select"),
                    ("Moving (function)", "moving_key", "volumes", "moving-select"),
                    ("Lesion mask (readout)", "lesion_key", "lesions", "lesion-select"),
                    ("Registration", "registration", "registrations", "registration-select"),
                    ("Method", "method", "methods", "method-select"),
                    ("Colour table", "colormap", "colormaps", "colormap-select"),
                ):
                    with html.Label(label), html.Select(v_model=(model,), raw_attrs=_test_id(test_id)):
                        _options(html, items)
                with html.Label("Method parameters (name=value ...)"):
                    html.Input(
                        type="text",
                        v_model=("parameters",),
                        placeholder="empty: the method's defaults",
                        raw_attrs=_test_id("parameters-input"),
                        classes="mf-text",
                    )
                    html.Span("{{ parameter_hint }}", classes="mf-note")
                with html.Div(classes="d-flex ga-2"):
                    v3.VBtn(
                        "Apply",
                        color="primary",
                        click=self.apply,
                        disabled=("running",),
                        raw_attrs=_test_id("apply"),
                    )
                    v3.VBtn("Cancel", click=self.cancel, disabled=("!running",), raw_attrs=_test_id("cancel"))
                    v3.VBtn("Refresh", variant="text", click=self.refresh, disabled=("running",))
                v3.VProgressLinear(model_value=("progress",), v_show=("running",), color="primary")
                # data-run counts the Apply presses: a script waits for the status of its own press
                html.Div(
                    "{{ status }}", classes="mf-status", raw_attrs=[*_test_id("status"), ':data-run="runs"']
                )
                html.Div("{{ message }}", classes="mf-note", raw_attrs=_test_id("message"))
                html.Div("{{ readout }}", v_show=("readout",), raw_attrs=_test_id("readout"))
                with html.Label(
                    "Overlay opacity (functional image over the fusion): {{ opacity_percent }} %"
                ):
                    html.Input(
                        type="range",
                        min=0,
                        max=100,
                        step=1,
                        v_model_number=("opacity_percent",),
                        raw_attrs=_test_id("opacity-slider"),
                    )
                v3.VBtn(
                    "Save result",
                    click=self.save,
                    disabled=("!has_result || running",),
                    raw_attrs=_test_id("save"),
                )
                html.Div("{{ saved }}", v_show=("saved",), classes="mf-note", raw_attrs=_test_id("saved"))
                html.Div(
                    "Wheel or slider: slice. Left drag: window/level. Shift + move: linked cursor.",
                    classes="mf-note",
                )
            layout.footer.clear()
            with layout.footer:
                html.Span(
                    f"MedFusion {__version__} · data folder {self.catalogue.root.name} · "
                    "a review tool: check results against the source images",
                    classes="text-caption",
                )
            with layout.content, html.Div(classes="mf-views"):
                for name, view in self.views.items():
                    with html.Div(classes="mf-view", raw_attrs=_test_id(f"view-{name}")):
                        client.ServerTemplate(name=get_view_trame_id(self.server, view))


def _default_pair(volumes: list[Any]) -> tuple[str, str]:
    """The pair to offer first: an anatomical (CT, MR) and a functional (PET, SPECT) volume,
    volumes before 2-D slices, the two whose names share the longest start (one patient's);
    else the first two."""
    anatomy = [v for v in volumes if v.modality in ("CT", "MR")]
    function = [v for v in volumes if v.modality in ("PET", "SPECT")]
    if anatomy and function:

        def score(pair: tuple[Any, Any]) -> tuple[int, int]:
            a, f = pair
            return (len(a.dimensions) == 3) + (len(f.dimensions) == 3), len(
                os.path.commonprefix([a.key, f.key])
            )

        best = max(((a, f) for a in anatomy for f in function), key=score)
        return best[0].key, best[1].key
    keys = [v.key for v in volumes]
    return (keys[0] if keys else ""), (keys[1] if len(keys) > 1 else "")


def _readout_text(readout: dict[str, Any] | None) -> str:
    """The lesion readout as one line (the Slicer panel's names, :data:`READOUT_NAMES`)."""
    from ..slicer_support import READOUT_NAMES

    if not readout:
        return ""
    if readout.get("pending"):
        return "Lesion: computing conspicuity kept and anatomy kept..."
    if "error" in readout:
        return f"lesion readout: {readout['error']}"
    parts = []
    for key, name in READOUT_NAMES.items():
        value = readout.get(key)
        parts.append(
            f"{name.lower()} {value:.2f}" if isinstance(value, (int, float)) else f"{name.lower()}: n/a"
        )
    return "Lesion: " + ", ".join(parts)
