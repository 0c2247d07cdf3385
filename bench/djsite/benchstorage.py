"""The seed project's StaticStorage (core/storage_backends.py), as deployed.

Its summary: static files (CSS, JS, fonts, images) under static/, cached a
year and immutable, gzip-compressed, served publicly.  django-storages 1.13
(Debian 12) calls the class S3Boto3Storage; later releases alias it as
S3Storage.
"""
from storages.backends.s3boto3 import S3Boto3Storage


class StaticStorage(S3Boto3Storage):
    location = "static"
    default_acl = "public-read"
    file_overwrite = True
    querystring_auth = False
    gzip = True
    object_parameters = {"CacheControl": "max-age=31536000, public, immutable"}
