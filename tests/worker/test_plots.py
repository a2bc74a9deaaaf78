"""Plots captured from real R workers (SPEC §5b): what R draws arrives as the
images R itself writes, one per page, blank pages left out, nothing left behind."""

from __future__ import annotations

import struct

import pytest

import bridge


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def r_png(r, code: str, width=5, height=4, dpi=100) -> bytes:
    """What R itself writes for the same drawing, through png() and dev.off()."""
    return bytes(r.eval(f"""local({{
        f <- tempfile(fileext = ".png")
        png(f, width = {width}, height = {height}, units = "in", res = {dpi}, type = "cairo")
        {code}
        dev.off()
        on.exit(unlink(f))
        readBin(f, "raw", file.size(f))
    }})"""))


def test_a_base_plot_arrives_as_the_png_r_itself_writes_in_its_final_state(r):
    code = "plot(1:10, main = 'x'); lines(1:10, col = 'red'); abline(h = 5)"
    with r.plots(width=5, height=4, dpi=100) as plots:
        assert r.eval(code + "; 42") == 42
    assert len(plots) == 1                      # the lines and abline are part of the one page
    plot = plots[0]
    assert (plot.mime, plot.width, plot.height) == ("image/png", 500, 400)
    assert png_size(plot.data) == (500, 400)
    assert plot.data == r_png(r, code)


def test_every_page_is_one_image_and_blank_pages_are_left_out_by_their_pixels(r):
    with r.plots(width=3, height=3, dpi=50) as plots:
        r.eval("""
            plot.new()                                   # blank, then a new page starts
            plot(1:3); plot(3:1)
            par(bg = 'steelblue'); plot.new(); par(bg = 'white')   # one colour all over: blank
            plot.new(); points(0.5, 0.5, pch = '.')      # one dot: a small file, not blank
        """)
    assert len(plots) == 3
    assert all(png_size(p.data) == (150, 150) for p in plots)
    assert len(plots[2].data) < len(plots[0].data)


def test_a_visible_ggplot_or_lattice_value_is_drawn_and_returned(r):
    r.eval("library(ggplot2); library(lattice)")
    with r.plots(width=6, height=4, dpi=72) as plots:
        value = r.eval("ggplot(mtcars, aes(wt, mpg)) + geom_point()")
        r.eval("p <- ggplot(mtcars, aes(wt, mpg)) + geom_point()")      # assigned: invisible, not drawn
        r.eval("xyplot(mpg ~ wt, data = mtcars)")
    assert isinstance(value, bridge.RObject) and "ggplot" in value.rclass
    assert [png_size(p.data) for p in plots] == [(432, 288), (432, 288)]
    ggplot_alone = r_png(r, "print(p)", 6, 4, 72)
    assert plots[0].data == ggplot_alone


def test_grid_drawing_and_grob_values(r):
    with r.plots(width=2, height=2, dpi=50) as plots:
        r.eval("grid::grid.newpage(); grid::grid.rect(gp = grid::gpar(fill = 'red')); invisible()")
        r.eval("grid::circleGrob(r = 0.3)")               # a visible grob is drawn on a page of its own
        r.eval("grid::grid.newpage()")                     # blank
    assert [png_size(p.data) for p in plots] == [(100, 100), (100, 100)]


def test_svg_plots_and_the_plot_interface(r, tmp_path):
    with r.plots(format="svg", width=4, height=3) as plots:
        r.eval("plot(1:3); plot.new()")
    assert len(plots) == 1
    plot = plots[0]
    assert plot.mime == "image/svg+xml" and (plot.width, plot.height) == (288, 216)
    assert plot._repr_svg_().lstrip().startswith("<?xml") and plot._repr_png_() is None
    plot.save(tmp_path / "p.svg")
    assert (tmp_path / "p.svg").read_bytes() == plot.data


def test_png_plots_show_at_72_pixels_per_inch(r):
    with r.plots(width=7, height=5, dpi=144) as plots:
        r.eval("plot(1)")
    data, meta = plots[0]._repr_png_()
    assert png_size(data) == (1008, 720) and meta == {"width": 504, "height": 360}


def test_a_failing_request_still_sends_its_plots_and_leaves_no_device(r):
    with r.plots() as plots, pytest.raises(bridge.RError, match="boom"):
        r.eval("plot(1); stop('boom')")
    assert len(plots) == 1
    assert r.eval("is.null(dev.list())")
    assert not r.eval("length(list.files(tempdir(), pattern = '^rbridge-plots-'))")


def test_without_plots_r_draws_where_it_always_did(r, tmp_path):
    f = tmp_path / "mine.png"
    r.eval(f"png('{f}')")                        # the user's own device
    with r.plots() as plots:
        r.eval("plot(1:10)")
    assert plots == [] and r.eval("names(dev.cur())") == "png"
    r.eval("invisible(dev.off())")
    assert f.stat().st_size > 1000
    with r.plots() as plots:
        r.eval("1 + 1")
    assert plots == [] and r.eval("is.null(dev.list())")


def test_a_nested_request_captures_its_own_plots(r):
    inner: list = []

    def draw_inside():
        with r.plots(width=2, height=2, dpi=50) as mine:
            r.eval("plot(2)")
        inner.extend(mine)
        return len(mine)

    with r.plots(width=4, height=4, dpi=50) as outer:
        draw_then_call = r.eval("function(f) { plot(1); f() }")
        assert draw_then_call(draw_inside) == 1
    assert [png_size(p.data) for p in inner] == [(100, 100)]
    assert [png_size(p.data) for p in outer] == [(200, 200)]


def test_a_page_too_large_to_send_is_a_warning_not_a_silent_loss(fresh):
    fresh.eval("options(rserver.max_plot_bytes = 1000)")
    with fresh.plots(width=2, height=2, dpi=50) as plots, pytest.warns(bridge.RWarning, match="was not sent"):
        fresh.eval("plot(rnorm(100)); plot.new(); points(0.5, 0.5)")
    assert len(plots) == 1 and len(plots[0].data) <= 1000     # the small page still came


def test_a_plot_too_large_is_the_workers_error_before_anything_runs(r):
    with r.plots(width=100, height=100, dpi=600), pytest.raises(bridge.RError, match="16384"):
        r.eval("assign('ran', TRUE)")
    assert not r.eval("exists('ran')")


@pytest.mark.parametrize("bad", [dict(format="jpeg"), dict(width=0), dict(dpi=-5)])
def test_bad_plot_settings_raise_value_error(r, bad):
    with pytest.raises(ValueError), r.plots(**bad):
        pass


def test_python_and_r_agree_on_which_objects_draw(r):
    from bridge._proxies import GRAPHICS_CLASSES
    assert set(r.eval("rserver:::GRAPHICS_CLASSES")) == GRAPHICS_CLASSES


def test_rich_displays_of_handles(r):
    frame = r.with_options(convert=False).eval("mtcars")
    assert "32 rows x 11 columns" in frame._repr_html_() and frame._repr_png_() is None
    gg = r.with_options(convert=False).eval("ggplot2::ggplot(mtcars, ggplot2::aes(wt, mpg))")
    assert gg._repr_html_() is None
    data, meta = gg._repr_png_()
    assert png_size(data) == (1008, 720) and meta == {"width": 504, "height": 360}
    assert r.eval("is.null(dev.list())")
