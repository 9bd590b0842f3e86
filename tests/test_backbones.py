import pytest
import torch

from modal_vlm.backbones import create_backbone, get_backbone, list_backbones, register_backbone
from modal_vlm.backbones.conse import LINEAR_NAME as LINEAR_CONSE, NAME as CONSE
from modal_vlm.model.prompt_learner import PromptLearner


def test_registry_lists_registered_and_open_clip_models():
    names = list_backbones()
    assert names[:3] == [LINEAR_CONSE, CONSE, "tiny-vit-bert"]
    assert "ViT-B-32" in names and "tiny-vit" in names
    assert "ViT-B-32" not in list_backbones(include_open_clip=False)


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown model_name 'nope'.*conse-efficientnet"):
        create_backbone("nope")


def test_unknown_pretrained_tag_lists_tags():
    with pytest.raises(ValueError, match="Unknown pretrained weights 'bogus'.*openai"):
        create_backbone("ViT-B-32", "bogus")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        create_backbone("tiny-vit", "/nowhere/missing.pt")


def test_default_pretrained_of_vit_b_32_is_openai(monkeypatch):
    from modal_vlm.backbones import open_clip_backbone

    assert open_clip_backbone.default_pretrained("ViT-B-32") == "openai"
    assert open_clip_backbone.default_pretrained("tiny-vit") == "random"


def test_random_weights_are_seeded_and_local_file_loads(tmp_path):
    a, b = create_backbone("tiny-vit"), create_backbone("tiny-vit")
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    # A local weights file, as a user would pass real CLIP weights: perturbed copy.
    import open_clip

    model = open_clip.create_model("tiny-vit")
    with torch.no_grad():
        model.visual.proj.add_(1.0)
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    loaded = create_backbone("tiny-vit", str(path))
    assert loaded.key != a.key and "file-" in loaded.key
    assert torch.equal(loaded.visual.proj, model.visual.proj)
    assert not torch.equal(loaded.visual.proj, a.visual.proj)


def test_get_backbone_is_shared_and_frozen():
    backbone = get_backbone("tiny-vit")
    assert get_backbone("tiny-vit") is backbone
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not backbone.training and not backbone.text.training


def test_register_backbone_by_name():
    from modal_vlm.backbones import _REGISTRY, create_open_clip_backbone

    register_backbone("test-alias", lambda pretrained=None, **kw: create_open_clip_backbone("tiny-vit", "random", **kw))
    try:
        assert "test-alias" in list_backbones()
        assert create_backbone("test-alias").key == create_backbone("tiny-vit").key
    finally:
        del _REGISTRY["test-alias"]


def test_open_clip_tower_truncation_is_exact():
    import open_clip

    torch.manual_seed(0)  # the seed create_backbone uses for random weights
    model = open_clip.create_model("tiny-vit")
    backbone = create_backbone("tiny-vit")
    texts = ["a photo of a cat.", "a photo of a very long named object class."]
    reference = model.encode_text(open_clip.get_tokenizer("tiny-vit")(texts), normalize=True)
    torch.testing.assert_close(backbone.encode_text(texts), reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_name", ["tiny-vit", "tiny-vit-bert"])
def test_prompt_learner_initialised_from_text_reproduces_that_text(model_name):
    """One CoOp implementation for both tower kinds: a context initialised from the
    tokens of "a photo of a" gives exactly the features of the plain prompts."""
    text = get_backbone(model_name).text
    names = ["cat", "sports car"]
    for specific in (True, False):
        learner = PromptLearner(text, names, ctx_init="a photo of a", class_specific_ctx=specific)
        assert learner.n_ctx == 4
        with torch.no_grad():
            learned = torch.nn.functional.normalize(learner(), dim=-1)
        torch.testing.assert_close(learned, text.encode_text([f"a photo of a {n}." for n in names]),
                                   atol=1e-5, rtol=1e-5)


def test_prompt_learner_shapes_and_gradients_reach_only_the_context():
    text = get_backbone("tiny-vit-bert").text
    learner = PromptLearner(text, ["a", "b", "c"], n_ctx=5, generator=torch.Generator().manual_seed(0))
    assert learner.ctx.shape == (3, 5, text.width)
    assert abs(float(learner.ctx.detach().std()) - 0.02) < 0.005
    learner().sum().backward()
    assert learner.ctx.grad is not None and learner.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in text.parameters())
    with pytest.raises(ValueError, match="n_ctx"):
        PromptLearner(text, ["a", "b"], n_ctx=0)


def test_linear_conse_embedding_is_the_centred_logits_mapped_by_the_class_text_features():
    import torch

    from modal_vlm.backbones.conse import LinearConSEVisual

    torch.manual_seed(0)
    classifier, text = torch.nn.Linear(5, 1000), torch.nn.functional.normalize(torch.randn(1000, 8), dim=-1)
    images = torch.randn(3, 5)
    z = classifier(images)
    expected = (z - z.mean(dim=1, keepdim=True)) @ text
    torch.testing.assert_close(LinearConSEVisual(classifier, text)(images), expected)
    # Centring: a logit shift shared by every class (e.g. the bias) does not move the embedding.
    shifted = torch.nn.Linear(5, 1000)
    shifted.load_state_dict({"weight": classifier.weight, "bias": classifier.bias + 3.0})
    torch.testing.assert_close(LinearConSEVisual(shifted, text)(images), expected)
