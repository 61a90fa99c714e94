"""The Jupyter Book: profiles and page parameters, planning a profile's runs and executing
its pages (figures), the Sphinx extension that runs them during ``jupyter-book build``
(extension), plots, and the paper-profile rehearsal (rehearsal). The top layer below
the command line.
"""
