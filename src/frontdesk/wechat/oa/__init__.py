"""WeChat Official Account: callback, OAuth, access token, template messages, menu."""
