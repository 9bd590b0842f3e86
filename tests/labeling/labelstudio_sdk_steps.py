"""Steps of test_labelstudio_live.py done through Label Studio's own SDK (``label-studio-sdk``).

The SDK pins ``numpy<2.3``, which the project's stack does not allow, so it lives in Label
Studio's virtual environment and this script runs there::

    .venv-label-studio/bin/python tests/labeling/labelstudio_sdk_steps.py STEP JSON

Steps (the JSON argument holds ``url`` and ``token``, plus what the step needs):

* ``token``: create a personal access token (with the legacy ``token``) and print it;
* ``project``: create a project with ``label_config``, add a local storage for ``path``
  and sync it, add a Data Manager view sorted by prediction score; print the ids;
* ``connect``: connect the ML backend at ``backend`` to ``project``.

Only the standard library is imported at module level: pytest imports this file to collect
its doctests.
"""
import json
import sys


def main(step, options):
    from label_studio_sdk import LabelStudio

    ls = LabelStudio(base_url=options["url"], api_key=options["token"])
    if step == "token":
        return {"token": ls.tokens.create().token}
    if step == "connect":
        return {"ml": ls.ml.create(project=options["project"], url=options["backend"], title="modal-vlm").id}
    project = ls.projects.create(title=options.get("title", "modal-vlm live test"),
                                 label_config=options["label_config"])
    storage = ls.import_storage.local.create(project=project.id, path=options["path"], use_blob_urls=True,
                                             recursive_scan=True, regex_filter=r".*\.(jpg|png)")
    ls.import_storage.local.sync(id=storage.id)
    hidden = ["inner_id", "completed_at", "cancelled_annotations", "total_predictions", "annotators",
              "annotations_results", "annotations_ids", "predictions_results", "predictions_model_versions",
              "file_upload", "storage_filename", "created_at", "updated_at", "updated_by", "avg_lead_time",
              "draft_exists", "comment_count", "unresolved_comment_count", "last_comment_updated_at",
              "comment_authors", "meta"]
    view = ls.views.create(project=project.id, data={
        "title": "modal-vlm priority", "ordering": ["-tasks:predictions_score"],
        "hiddenColumns": {"explore": [f"tasks:{name}" for name in hidden], "labeling": []}})
    return {"project": project.id, "storage": storage.id, "view": view.id}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], json.loads(sys.argv[2]))))
