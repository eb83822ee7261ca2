"""Hospital information and patient interaction (issue 10).

The message board (patients write, customer service answers), saved replies, uploaded
images, the hospital's own pages (introduction, transport, hours, floors, phones) plus the
department and doctor catalog read from the HIS, news and notices (pushed to followers who
opted in), and notification preferences. Hospital pages live here rather than in a
``hospital`` package: they are the same staff's content, edited in the same console pages,
and ``messaging`` is the domain the import rules already know.
"""
