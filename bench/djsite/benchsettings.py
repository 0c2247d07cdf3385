"""Django settings for the benchmark's collectstatic runs (W1, W2, W6).

The minimum a project needs for `django-admin collectstatic`, driven by the
environment so one settings module serves every contender:

  BENCH_STATIC_SRC   the source tree (STATICFILES_DIRS)
  BENCH_STORAGE      "fs": Django's FileSystemStorage into BENCH_STATIC_ROOT
                     (cdnfs, s3fs, rclone mounts, a local directory, and the
                     local collect that `aws s3 sync` then uploads);
                     "s3": benchstorage.StaticStorage, django-storages
                     straight to S3 as the seed project deployed it
  BENCH_STATIC_ROOT  STATIC_ROOT for "fs"
  AWS_STORAGE_BUCKET_NAME, AWS_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
  AWS_SECRET_ACCESS_KEY  for "s3" (read by django-storages itself)
"""
import os

SECRET_KEY = "bench-not-secret"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["django.contrib.staticfiles"]
STATIC_URL = "/static/"
STATICFILES_DIRS = [os.environ["BENCH_STATIC_SRC"]]
STATICFILES_FINDERS = ["django.contrib.staticfiles.finders.FileSystemFinder"]

if os.environ.get("BENCH_STORAGE", "fs") == "s3":
    STATICFILES_STORAGE = "benchstorage.StaticStorage"
    AWS_STORAGE_BUCKET_NAME = os.environ["AWS_STORAGE_BUCKET_NAME"]
    AWS_S3_ENDPOINT_URL = os.environ["AWS_S3_ENDPOINT_URL"]
    AWS_S3_REGION_NAME = "us-east-1"
    AWS_S3_ADDRESSING_STYLE = "path"
    AWS_S3_SIGNATURE_VERSION = "s3v4"
    STATIC_URL = f"{AWS_S3_ENDPOINT_URL}/{AWS_STORAGE_BUCKET_NAME}/static/"
else:
    STATICFILES_STORAGE = "django.contrib.staticfiles.storage.StaticFilesStorage"
    STATIC_ROOT = os.environ["BENCH_STATIC_ROOT"]
