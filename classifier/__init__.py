"""The pure core: audio in, gender + attention out.

Knows nothing of Celery, HTTP, SQL or HTML. One recording passes through
``audio`` (decode, validate, window) -> ``features`` (MFCC / log-mel) ->
``model`` (ResNet-34 + checkpoint) -> ``gradcam`` (attention) and
``pipeline`` ties them together per batch.
"""
