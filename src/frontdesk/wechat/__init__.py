"""WeChat: the Official Account (``oa``) and WeChat Pay API v3 (``pay``) ports and adapters."""
