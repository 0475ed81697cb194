"""Issue #19's caption test on the embedded default (``vdot_nodes/assets/toy``): generate from captions of
the toy grammar and check each video against the caption's own truth (``training.toy.check_default``)."""

from training.toy.check_default import main


def test_embedded_default_draws_the_named_colour_in_the_place_and_motion_of_its_control(capsys):
    # 8 held-out scenes × 6 colour words, each with the scene's depth control: the colour can come only
    # from the caption. Measured on toy12_mix's student (the default): colour 47 of 48, place 47, motion 48
    # (toy12_5400's: 48, 47, 48; toy12's: 46, 46, 48; toy10's: 44, 48, 46); a model deaf to the colour words
    # would name 8.
    code = main([])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.strip().endswith("videos with a miss)")
